//! The hypervisor's IOMMUs: discovered from DMAR or IVRS at boot, driven by the `iommu`
//! crate's unit drivers through [`MmioWindow`](crate::mmio::MmioWindow) and
//! [`KernelMemory`](crate::mem::KernelMemory).
//!
//! Everything vendor-neutral (domains, the DMA tracker, the tests that prove translation
//! with DMA) is written against [`iommu::unit::RemappingUnit`]; this module only finds
//! the units, brings them up, routes each PCI function to its unit and requester id, and
//! services fault records and event logs.

mod amd;
mod domain_ids;
mod error;
mod faults;
pub mod groups;
pub mod identity;
pub mod interrupts;
mod vtd;

use crate::mem::KernelMemory;
use crate::mmio::MmioWindow;
use crate::pci::{Bdf, PciFunction};
use alloc::vec::Vec;
use iommu::acpi::pci::{Bdf as AcpiBdf, BridgeKind, MemRange, PciBridge};
use iommu::amdvi::AmdViUnit;
use iommu::vtd::VtdUnit;

pub use domain_ids::DomainIds;
pub use error::{DomainIdError, InterruptsNotIsolated, RouteError};
pub use faults::{
    background_drains, fault_interrupts, lines_logged, service_faults, service_signalled,
    signalled, FaultEvent,
};
pub use iommu::acpi::reserved::ReservedRegion;

/// A VT-d unit as the kernel drives it.
pub type KernelVtd = VtdUnit<MmioWindow, KernelMemory>;
/// An AMD-Vi unit as the kernel drives it.
pub type KernelAmdVi = AmdViUnit<MmioWindow, KernelMemory>;

/// The machine's remapping units (one vendor per machine).
pub enum Units {
    /// No usable IOMMU: device DMA is untranslated.
    None,
    /// Intel VT-d units, in DMAR order.
    Vtd(Vec<KernelVtd>),
    /// AMD-Vi units, in IVRS order.
    Amd(Vec<KernelAmdVi>),
}

/// Where a PCI function's DMA is translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index into the unit list.
    pub unit: usize,
    /// The requester id (VT-d source id, AMD-Vi device id) its DMA carries there.
    pub requester_id: u16,
}

/// Each PCI function's route, as bring-up found it.
pub type RouteTable = Vec<(Bdf, Route)>;

/// The IOMMUs, the device routes and domain-id allocation.
pub struct IommuSystem {
    /// The units.
    pub units: Units,
    routes: Vec<(Bdf, Route)>,
    /// Domain-id allocation, one id space per unit.
    pub domain_ids: DomainIds,
    /// RMRR / IVMD regions firmware reserved for devices.
    reserved: Vec<ReservedRegion>,
    /// Every function's requester-id aliases and isolation group.
    isolation: iommu::acpi::groups::Isolation,
    /// Per unit: why it does not remap interrupts (`None`: it does).
    ir_problems: Vec<Option<alloc::string::String>>,
    /// `allow-unsafe-interrupts`: assign devices even through units that do not remap
    /// interrupts.
    pub allow_unsafe_interrupts: bool,
}

impl IommuSystem {
    /// The unit and requester id that translate `bdf`'s DMA, if any.
    pub fn route(&self, bdf: Bdf) -> Option<Route> {
        self.routes.iter().find(|(b, _)| *b == bdf).map(|(_, r)| *r)
    }

    /// Every requester id `bdf`'s DMA may carry at its unit (its route's first): each
    /// must point at the same context entry / DTE, or a DMA under an alias escapes.
    pub fn dma_ids(&self, bdf: Bdf) -> Vec<u16> {
        let Some(route) = self.route(bdf) else { return Vec::new() };
        dma_ids_of(&self.isolation, bdf, route.requester_id)
    }

    /// The functions the IOMMU cannot tell apart from `bdf` (itself included), with the
    /// group's description for messages.
    pub fn isolation_group(&self, bdf: Bdf) -> Option<(Vec<Bdf>, alloc::string::String)> {
        let own = AcpiBdf::from_id(bdf.requester_id());
        let g = self.isolation.group_of(bdf.segment, own)?;
        let members = g
            .members
            .iter()
            .map(|m| Bdf { segment: g.segment, bus: m.bus, device: m.device, function: m.function })
            .collect();
        Some((members, alloc::format!("{g}")))
    }

    /// Firmware-reserved memory (RMRR, IVMD) that device `bdf` uses. A device with any
    /// cannot be assigned to a partition.
    pub fn reserved_for(&self, bdf: Bdf) -> Vec<&ReservedRegion> {
        self.reserved.iter().filter(|r| r.applies_to(bdf.segment, bdf.requester_id())).collect()
    }

    /// Whether devices translated by `unit` may be assigned to a partition: only when the
    /// unit remaps interrupts (else the device could raise any vector, NMI or INIT on the
    /// host), or when `allow-unsafe-interrupts` was given (then a warning is logged).
    /// `Err` says why.
    pub fn interrupt_isolation(&self, unit: usize) -> Result<(), InterruptsNotIsolated> {
        let Some(why) = self.ir_problems.get(unit).cloned().flatten() else {
            return Ok(());
        };
        if self.allow_unsafe_interrupts {
            log::warn!(
                "UNSAFE: IOMMU unit {unit} does not remap interrupts ({why}); assigning its device \
                 anyway because of allow-unsafe-interrupts: it can raise any interrupt on the host"
            );
            return Ok(());
        }
        Err(InterruptsNotIsolated { unit, why })
    }

    /// Number of units brought up.
    pub fn unit_count(&self) -> usize {
        match &self.units {
            Units::None => 0,
            Units::Vtd(u) => u.len(),
            Units::Amd(u) => u.len(),
        }
    }
}

/// `bdf`'s requester id at its unit (`routed`) first, then every alias `isolation` found.
pub(crate) fn dma_ids_of(
    isolation: &iommu::acpi::groups::Isolation,
    bdf: Bdf,
    routed: u16,
) -> Vec<u16> {
    let mut ids = alloc::vec![routed];
    let own = AcpiBdf::from_id(bdf.requester_id());
    for &id in isolation.aliases_of(bdf.segment, own) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Replaces VT-d unit `index` by a fresh driver instance that takes the unit over as
/// from firmware (for the take-over test); returns what the hand-off found.
pub fn take_over_vtd(
    sys: &mut IommuSystem,
    index: usize,
) -> Result<iommu::vtd::HandOff, alloc::string::String> {
    let Units::Vtd(units) = &mut sys.units else { return Err("not a VT-d machine".into()) };
    let old = units.get_mut(index).ok_or("no such VT-d unit")?;
    let new = vtd::take_over(old)?;
    let found = new.hand_off();
    // The old instance (no Drop: it never touches the unit again) leaves its root table
    // and queue frames behind on purpose: the unit may have read them until the new root
    // was latched, so they are never reused.
    *old = new;
    Ok(found)
}

/// Replaces AMD-Vi unit `index` by a fresh driver instance that takes the unit over as
/// from firmware (for the take-over test).
pub fn take_over_amd(sys: &mut IommuSystem, index: usize) -> Result<(), alloc::string::String> {
    let Units::Amd(units) = &mut sys.units else { return Err("not an AMD-Vi machine".into()) };
    let old = units.get_mut(index).ok_or("no such AMD-Vi unit")?;
    let new = amd::take_over(old)?;
    // The old instance's tables stay allocated: the unit may have read them until the new
    // device table base was latched.
    *old = new;
    Ok(())
}

impl IommuSystem {
    /// Whether `unit` does not remap interrupts.
    fn interrupt_isolation_problem(&self, unit: usize) -> bool {
        self.ir_problems.get(unit).is_some_and(|p| p.is_some())
    }
}

/// Routes every PCI function through `lookup` (table index + requester id), computes the
/// isolation groups (ACS enabled first) and plans the identity domains firmware-reserved
/// memory needs, then starts every usable unit (`(table index, base)` pairs) with `start`,
/// which installs that unit's identity domains before it enables translation
/// ([`identity::FirmwareDma::before_enable`]). Units that fail are skipped. Shared by both
/// vendors' bring-up; `None` when no unit came up.
fn start_and_route<U>(
    what: &str,
    usable: impl Iterator<Item = (usize, u64)>,
    mut start: impl FnMut(usize, u64, &mut identity::FirmwareDma) -> Result<U, alloc::string::String>,
    pci: &[PciFunction],
    lookup: impl Fn(&PciFunction) -> Option<iommu::acpi::resolve::Translation>,
    firmware: &Firmware<'_>,
) -> Option<BroughtUp<U>> {
    // Table index and requester id per function, before any unit starts.
    let planned: RouteTable = pci
        .iter()
        .filter_map(|f| {
            let t = lookup(f)?;
            Some((f.bdf, Route { unit: t.unit, requester_id: t.requester_id }))
        })
        .collect();
    let isolation = groups::compute(pci, &planned);
    let mut early = identity::FirmwareDma::plan(&planned, firmware, &isolation);
    let mut units = Vec::new();
    // Table index -> position in `units`.
    let mut position = Vec::new();
    for (index, base) in usable {
        match start(index, base, &mut early) {
            Ok(unit) => {
                position.push((index, units.len()));
                units.push(unit);
            }
            Err(e) => log::error!("iommu: {what} {index} at {base:#x}: {e}; unit skipped"),
        }
    }
    if units.is_empty() {
        return None;
    }
    let routes = planned
        .iter()
        .filter_map(|(bdf, r)| {
            let &(_, unit) = position.iter().find(|(i, _)| *i == r.unit)?;
            Some((*bdf, Route { unit, ..*r }))
        })
        .collect();
    let (domain_ids, kept) = early.finish();
    if kept > 0 {
        log::info!(
            "iommu: {kept} functions keep firmware-reserved memory reachable, from before \
             translation went on"
        );
    }
    Some(BroughtUp { units, routes, isolation, domain_ids })
}

/// What bring-up hands back: running units, routes, isolation groups, domain-id spaces
/// (with the identity domains' ids live).
pub(crate) struct BroughtUp<U> {
    pub units: Vec<U>,
    pub routes: RouteTable,
    pub isolation: iommu::acpi::groups::Isolation,
    pub domain_ids: DomainIds,
}

/// Firmware facts bring-up needs before translation goes on: the reserved regions
/// (RMRR/IVMD) and, on AMD-Vi, the IVRS for the IVMD access flags.
pub(crate) struct Firmware<'a> {
    pub reserved: &'a [ReservedRegion],
    pub ivrs: Option<&'a iommu::acpi::Ivrs<'a>>,
}

/// Firmware-reserved ranges from the memory map (for RMRR/IVMD checks), inclusive ends.
fn reserved_ranges(boot: &boot::BootInfo) -> Vec<MemRange> {
    boot.memory_map()
        .iter()
        .filter(|r| r.kind != boot::MemoryKind::Usable && r.len > 0)
        .map(|r| MemRange { start: r.start, end: r.end() - 1 })
        .collect()
}

/// Bridges as the resolution code wants them.
fn bridges(pci: &[PciFunction]) -> Vec<PciBridge> {
    pci.iter()
        .filter_map(|f| {
            let (secondary, subordinate) = f.bridge?;
            let kind = BridgeKind::from_pcie_type(f.pcie_type);
            Some(PciBridge {
                segment: f.bdf.segment,
                bdf: AcpiBdf::from_id(f.bdf.requester_id()),
                secondary,
                subordinate,
                kind,
            })
        })
        .collect()
}

/// Finds the IOMMUs (DMAR first, then IVRS), brings every usable unit up and routes
/// every PCI function. Never fails the boot: a table or unit that cannot be used is
/// reported and skipped, and the machine runs without translation for it.
pub fn discover(
    acpi: &crate::acpi::AcpiInfo,
    pci: &[PciFunction],
    boot: &boot::BootInfo,
    opts: &boot::cmdline::Options<'_>,
) -> IommuSystem {
    let mut sys = IommuSystem {
        units: Units::None,
        routes: Vec::new(),
        domain_ids: DomainIds::default(),
        reserved: Vec::new(),
        isolation: Default::default(),
        ir_problems: Vec::new(),
        allow_unsafe_interrupts: opts.allow_unsafe_interrupts,
    };
    let ioapic_ids: Vec<u8> = acpi.ioapics.iter().map(|(id, _)| *id).collect();
    let reserved = reserved_ranges(boot);
    let bridges = bridges(pci);
    if let Some(table) = acpi.dmar {
        // Parsed once; a table that does not parse leaves VT-d off (said once, here).
        match iommu::acpi::Dmar::parse(table) {
            Err(e) => log::error!("[Firmware Bug] DMAR: {e}; VT-d stays off"),
            Ok(dmar) => {
                // RMRRs first: their identity domains go in before translation is enabled.
                let (regions, problems) = iommu::acpi::reserved::from_dmar(&dmar, &bridges);
                for (base, e) in problems {
                    log::warn!("DMAR: RMRR at {base:#x}: a device scope does not resolve: {e:?}");
                }
                sys.reserved = regions;
                let firmware = Firmware { reserved: &sys.reserved, ivrs: None };
                if let Some(up) =
                    vtd::bring_up(&dmar, pci, &bridges, &reserved, &ioapic_ids, opts, &firmware)
                {
                    sys.ir_problems = up
                        .units
                        .iter()
                        .map(|u| match u.interrupt_remapping() {
                            iommu::vtd::IrState::Enabled { .. } => None,
                            iommu::vtd::IrState::Unavailable(why) => Some(why.into()),
                        })
                        .collect();
                    sys.units = Units::Vtd(up.units);
                    sys.routes = up.routes;
                    sys.isolation = up.isolation;
                    sys.domain_ids = up.domain_ids;
                }
            }
        }
    } else if let Some(table) = acpi.ivrs {
        match iommu::acpi::Ivrs::parse(table) {
            Err(e) => log::error!("[Firmware Bug] IVRS: {e}; AMD-Vi stays off"),
            Ok(ivrs) => {
                sys.reserved = iommu::acpi::reserved::from_ivrs(&ivrs);
                let firmware = Firmware { reserved: &sys.reserved, ivrs: Some(&ivrs) };
                if let Some((up, ir_problems)) =
                    amd::bring_up(&ivrs, pci, &reserved, &ioapic_ids, &firmware)
                {
                    sys.ir_problems = ir_problems;
                    sys.units = Units::Amd(up.units);
                    sys.routes = up.routes;
                    sys.isolation = up.isolation;
                    sys.domain_ids = up.domain_ids;
                }
            }
        }
    } else {
        log::info!("iommu: no DMAR or IVRS table: no IOMMU, device DMA is untranslated");
    }
    if matches!(sys.units, Units::None) {
        // No unit came up: nothing translates, and nothing is kept reachable either.
        sys.isolation = groups::compute(pci, &sys.routes);
    }
    if sys.allow_unsafe_interrupts {
        let without: Vec<usize> =
            (0..sys.unit_count()).filter(|u| sys.interrupt_isolation_problem(*u)).collect();
        log::warn!(
            "UNSAFE: allow-unsafe-interrupts given: devices may be assigned through IOMMU units \
             that do not remap interrupts ({}): interrupts are NOT isolated for them",
            if without.is_empty() {
                alloc::string::String::from("none on this machine: every unit remaps them")
            } else {
                alloc::format!("units {without:?}")
            }
        );
    }
    for (bdf, r) in &sys.routes {
        log::info!("iommu: {bdf} -> unit {} as requester id {:#06x}", r.unit, r.requester_id);
        for res in sys.reserved_for(*bdf) {
            let MemRange { start, end } = res.range;
            log::info!(
                "iommu: {bdf} uses firmware-reserved memory {start:#x}-{end:#x} ({})",
                res.source
            );
        }
    }
    sys
}
