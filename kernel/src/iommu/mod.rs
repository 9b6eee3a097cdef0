//! The hypervisor's IOMMUs: discovered from DMAR or IVRS at boot, driven by the `iommu`
//! crate's unit drivers through [`MmioWindow`](crate::mmio::MmioWindow) and
//! [`KernelMemory`](crate::mem::KernelMemory).
//!
//! Everything vendor-neutral (domains, the DMA tracker, the tests that prove translation
//! with DMA) is written against [`iommu::unit::RemappingUnit`]; this module only finds
//! the units, brings them up, routes each PCI function to its unit and requester id, and
//! services fault records and event logs.

mod amd;
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
use iommu::invalidate::DomainId;
use iommu::vtd::VtdUnit;

pub use error::{DomainIdError, InterruptsNotIsolated, RouteError};
pub use faults::{fault_interrupts, lines_logged, service_faults, FaultEvent};
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

/// Hands out domain ids per unit, each below that unit's domain count (VT-d CAP.ND,
/// AMD-Vi 65536), never one that is live, and never 0 (VT-d caching-mode units reserve
/// it). Ids are handed out round-robin, so a freed id is reused as late as possible.
#[derive(Debug, Default)]
pub struct DomainIds {
    units: Vec<UnitDomainIds>,
}

/// One unit's id space: a bit per id, set while the id is live.
#[derive(Debug)]
struct UnitDomainIds {
    count: u32,
    live: Vec<u64>,
    next: u32,
}

impl UnitDomainIds {
    fn is_live(&self, id: u32) -> bool {
        self.live[(id / 64) as usize] & 1 << (id % 64) != 0
    }

    fn set(&mut self, id: u32, live: bool) {
        let word = &mut self.live[(id / 64) as usize];
        if live {
            *word |= 1 << (id % 64);
        } else {
            *word &= !(1 << (id % 64));
        }
    }
}

impl DomainIds {
    /// Id spaces for units with these domain counts (in unit order); counts above 65536
    /// are cut to what a [`DomainId`] can name.
    pub fn new(counts: impl IntoIterator<Item = u32>) -> DomainIds {
        let units = counts
            .into_iter()
            .map(|c| {
                let count = c.min(1 << 16);
                UnitDomainIds { count, live: alloc::vec![0; count.div_ceil(64) as usize], next: 1 }
            })
            .collect();
        DomainIds { units }
    }

    /// A domain id on `unit` that no live domain there uses; `Err` (with the reason) when
    /// every id the unit supports is live or the unit does not exist.
    pub fn alloc(&mut self, unit: usize) -> Result<DomainId, DomainIdError> {
        let space = self.units.get_mut(unit).ok_or(DomainIdError::NoSuchUnit(unit))?;
        // Ids 1..count are usable.
        for _ in 1..space.count {
            let id = space.next;
            space.next = if id + 1 >= space.count { 1 } else { id + 1 };
            if !space.is_live(id) {
                space.set(id, true);
                return Ok(id as DomainId);
            }
        }
        Err(DomainIdError::Exhausted { unit, usable: space.count.saturating_sub(1) })
    }

    /// Gives `id` on `unit` back: call only after the domain's devices were blocked and
    /// its cached translations invalidated (the id may be handed out again).
    pub fn free(&mut self, unit: usize, id: DomainId) {
        if let Some(space) = self.units.get_mut(unit) {
            let id = id as u32;
            if id != 0 && id < space.count {
                space.set(id, false);
            }
        }
    }

    /// Ids live on `unit` (for tests and logs).
    pub fn live(&self, unit: usize) -> usize {
        self.units.get(unit).map_or(0, |s| s.live.iter().map(|w| w.count_ones() as usize).sum())
    }
}

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
        let mut ids = alloc::vec![route.requester_id];
        let own = AcpiBdf::from_id(bdf.requester_id());
        for &id in self.isolation.aliases_of(bdf.segment, own) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
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

impl IommuSystem {
    /// Whether `unit` does not remap interrupts.
    fn interrupt_isolation_problem(&self, unit: usize) -> bool {
        self.ir_problems.get(unit).is_some_and(|p| p.is_some())
    }
}

/// Starts every usable unit (`(table index, base)` pairs) with `start`, skipping those that
/// fail, then routes every PCI function through `lookup` (table index + requester id).
/// Shared by both vendors' bring-up; `None` when no unit came up.
fn start_and_route<U>(
    what: &str,
    usable: impl Iterator<Item = (usize, u64)>,
    mut start: impl FnMut(usize, u64) -> Result<U, alloc::string::String>,
    pci: &[PciFunction],
    lookup: impl Fn(&PciFunction) -> Option<iommu::acpi::resolve::Translation>,
) -> Option<(Vec<U>, RouteTable)> {
    let mut units = Vec::new();
    // Table index -> position in `units`.
    let mut position = Vec::new();
    for (index, base) in usable {
        match start(index, base) {
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
    let routes = pci
        .iter()
        .filter_map(|f| {
            let t = lookup(f)?;
            let &(_, unit) = position.iter().find(|(i, _)| *i == t.unit)?;
            Some((f.bdf, Route { unit, requester_id: t.requester_id }))
        })
        .collect();
    Some((units, routes))
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
    if let Some(dmar) = acpi.dmar {
        if let Some((units, routes)) =
            vtd::bring_up(dmar, pci, &bridges, &reserved, &ioapic_ids, opts)
        {
            sys.domain_ids =
                DomainIds::new(units.iter().map(|u| u.capabilities().0.domain_count()));
            sys.ir_problems = units
                .iter()
                .map(|u| match u.interrupt_remapping() {
                    iommu::vtd::IrState::Enabled { .. } => None,
                    iommu::vtd::IrState::Unavailable(why) => Some(why.into()),
                })
                .collect();
            sys.units = Units::Vtd(units);
            sys.routes = routes;
            if let Ok(d) = iommu::acpi::Dmar::parse(dmar) {
                let (regions, problems) = iommu::acpi::reserved::from_dmar(&d, &bridges);
                for (base, e) in problems {
                    log::warn!("DMAR: RMRR at {base:#x}: a device scope does not resolve: {e}");
                }
                sys.reserved = regions;
            }
        }
    } else if let Some(ivrs) = acpi.ivrs {
        if let Some((units, routes, ir_problems)) = amd::bring_up(ivrs, pci, &reserved, &ioapic_ids)
        {
            sys.ir_problems = ir_problems;
            // AMD-Vi domain ids are 16 bits on every unit.
            sys.domain_ids = DomainIds::new(units.iter().map(|_| 1 << 16));
            sys.units = Units::Amd(units);
            sys.routes = routes;
            if let Ok(t) = iommu::acpi::Ivrs::parse(ivrs) {
                sys.reserved = iommu::acpi::reserved::from_ivrs(&t);
            }
        }
    } else {
        log::info!("iommu: no DMAR or IVRS table: no IOMMU, device DMA is untranslated");
    }
    sys.isolation = groups::compute(pci, &sys.routes);
    keep_firmware_dma_reachable(&mut sys, acpi.ivrs);
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

/// Right after enable: every routed function with RMRR/IVMD regions gets an identity
/// domain of exactly those ranges (see [`identity`]).
fn keep_firmware_dma_reachable(sys: &mut IommuSystem, ivrs: Option<&[u8]>) {
    let ivrs = ivrs.and_then(|t| iommu::acpi::Ivrs::parse(t).ok());
    let (routes, reserved, ids) = (&sys.routes, &sys.reserved, &mut sys.domain_ids);
    let kept = match &mut sys.units {
        Units::None => return,
        Units::Vtd(u) => identity::keep_reserved_reachable(u, ids, routes, reserved, None),
        Units::Amd(u) => identity::keep_reserved_reachable(u, ids, routes, reserved, ivrs.as_ref()),
    };
    if !kept.is_empty() {
        log::info!("iommu: {} functions keep firmware-reserved memory reachable", kept.len());
    }
}
