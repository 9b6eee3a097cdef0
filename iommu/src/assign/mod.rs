//! Assignability: for every PCI function of a machine, which IOMMU unit translates it
//! with which requester id, which isolation group it is in, and whether it can be given
//! to a partition (and if not, why). Shared by the kernel's `mode=report` boot,
//! `cargo xtask inspect --machine` (Linux sysfs) and their tests, so the three give the
//! same verdicts.
//!
//! Input is what enumeration found ([`Function`]), the raw DMAR or IVRS bytes and where
//! the console UART is; [`assess`] resolves the tables against the topology exactly as
//! the kernel's bring-up does (same resolution and sanity checks), and [`render`] turns
//! the answer into report lines, JSON lines and a configuration skeleton.

mod class;
pub mod render;
#[cfg(test)]
mod tests;

pub use class::class_name;

use crate::acpi::groups::{isolate, FunctionFacts};
use crate::acpi::pci::{Bdf, BridgeKind, MemRange, PciBridge};
use crate::acpi::reserved::{self, ReservedRegion};
use crate::acpi::resolve::{DmarUnits, IvrsUnits, Translation};
use crate::acpi::sanity::{check_dmar, check_ivrs, PlatformFacts};
use crate::acpi::{Dmar, Ivrs};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

pub use crate::acpi::pci::PCIE_TO_PCI_BRIDGE;

/// A base address register as enumeration sized it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarInfo {
    /// BAR slot (0-5).
    pub slot: u8,
    /// Memory (true) or I/O space.
    pub memory: bool,
    /// Base address (port number for I/O).
    pub base: u64,
    /// Size in bytes (ports for I/O).
    pub size: u64,
}

/// One PCI function as enumeration found it (ECAM in the kernel, sysfs on Linux).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// PCI segment group.
    pub segment: u16,
    /// Bus, device, function.
    pub bdf: Bdf,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class, subclass, programming interface.
    pub class: (u8, u8, u8),
    /// For bridges: (secondary bus, subordinate bus).
    pub bridge: Option<(u8, u8)>,
    /// PCI Express device/port type, when the function has the capability.
    pub pcie_type: Option<u8>,
    /// Implemented BARs.
    pub bars: Vec<BarInfo>,
    /// The ACS capability register (PCIe extended capability 0x000D), when the function
    /// has one and its extended configuration space could be read.
    pub acs: Option<u16>,
}

/// PCIe extended capability id of Access Control Services.
pub const ACS_CAPABILITY: u16 = 0x000D;

/// Walks the PCIe extended capability list (from offset 0x100, bounded) with `read32`
/// (a configuration-space dword read) and returns the ACS capability register, if any.
pub fn find_acs(read32: impl Fn(u16) -> Option<u32>) -> Option<u16> {
    let mut at = 0x100u16;
    for _ in 0..64 {
        let header = read32(at)?;
        if header == 0 || header == u32::MAX {
            return None;
        }
        if header & 0xFFFF == ACS_CAPABILITY as u32 {
            return read32(at + 4).map(|v| v as u16);
        }
        let next = ((header >> 20) & 0xFFC) as u16;
        if next < 0x100 {
            return None;
        }
        at = next;
    }
    None
}

/// The ACS capability bits in lspci's words (`SrcValid+ TransBlk- ...`).
pub fn acs_words(cap: u16) -> String {
    let bits = [
        "SrcValid",
        "TransBlk",
        "ReqRedir",
        "CmpltRedir",
        "UpstreamFwd",
        "EgressCtrl",
        "DirectTrans",
    ];
    let mut s = String::new();
    for (i, name) in bits.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(name);
        s.push(if cap & (1 << i) != 0 { '+' } else { '-' });
    }
    s
}

impl Function {
    /// The function as the requester-id resolution sees a bridge (None: not a bridge).
    pub fn as_bridge(&self) -> Option<PciBridge> {
        let (secondary, subordinate) = self.bridge?;
        let kind = BridgeKind::from_pcie_type(self.pcie_type);
        Some(PciBridge { segment: self.segment, bdf: self.bdf, secondary, subordinate, kind })
    }

    /// `SSSS:BB:DD.F`.
    pub fn address(&self) -> String {
        format!("{:04x}:{}", self.segment, self.bdf)
    }

    fn is_bridge(&self) -> bool {
        self.class.0 == 0x06 || self.bridge.is_some()
    }
}

/// Where the hypervisor's console UART is (a PCI serial card using it cannot be assigned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleAt {
    /// I/O port base.
    Port(u16),
    /// MMIO base.
    Mmio(u64),
}

/// Everything known about a machine, from whichever side looked.
#[derive(Debug, Clone, Default)]
pub struct MachineFacts<'a> {
    /// Every PCI function.
    pub functions: Vec<Function>,
    /// The DMAR table's bytes.
    pub dmar: Option<&'a [u8]>,
    /// The IVRS table's bytes.
    pub ivrs: Option<&'a [u8]>,
    /// The console UART.
    pub console: Option<ConsoleAt>,
    /// Firmware-reserved memory from the memory map (inclusive), for the sanity checks.
    pub reserved_memory: Option<Vec<MemRange>>,
    /// I/O APIC ids from the MADT, for the sanity checks.
    pub ioapic_ids: Option<Vec<u8>>,
}

/// Which IOMMU architecture the machine has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Neither table (or neither parses).
    None,
    /// Intel VT-d (DMAR).
    Vtd,
    /// AMD-Vi (IVRS).
    AmdVi,
}

/// One remapping unit the table declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSummary {
    /// DRHD index, or IVHD index among all IVHD blocks.
    pub index: usize,
    /// Register base.
    pub base: u64,
    /// PCI segment.
    pub segment: u16,
    /// False when a sanity check made it unusable (its devices are then behind no IOMMU).
    pub usable: bool,
    /// VT-d: the DRHD covers every device of its segment not claimed by another unit.
    pub include_all: bool,
    /// AMD-Vi: the EFR image the IVHD carries (types 0x11 and 0x40).
    pub efr_from_table: Option<u64>,
}

/// Why a function cannot be assigned (or that it can).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It can be given to a partition alone.
    Assignable,
    /// A bridge (host, ISA, PCI): it forwards other devices' traffic.
    Bridge,
    /// It is the hypervisor's console UART.
    Console,
    /// It is an IOMMU (AMD-Vi units are PCI functions): it translates the others.
    Iommu,
    /// No usable IOMMU unit translates it: its DMA could not be confined.
    NoIommu,
    /// Firmware reserved memory (RMRR/IVMD) for it: its DMA needs host memory inside the
    /// partition.
    FirmwareReserved {
        /// The region.
        range: MemRange,
        /// "RMRR" or "IVMD".
        source: &'static str,
    },
    /// No memory BAR: nothing to pass through to a guest.
    NoMemoryBar,
    /// The IOMMU cannot keep its DMA apart from these functions' (a shared requester id,
    /// or no ACS between them): they go to one partition together or not at all.
    SharesGroup(Vec<String>),
}

impl Verdict {
    /// Whether the function can be assigned alone.
    pub fn assignable(&self) -> bool {
        *self == Verdict::Assignable
    }

    /// A short machine-friendly key ("assignable", "bridge", ...).
    pub fn key(&self) -> &'static str {
        match self {
            Verdict::Assignable => "assignable",
            Verdict::Bridge => "bridge",
            Verdict::Console => "console",
            Verdict::Iommu => "iommu",
            Verdict::NoIommu => "no-iommu",
            Verdict::FirmwareReserved { .. } => "firmware-reserved-memory",
            Verdict::NoMemoryBar => "no-memory-bar",
            Verdict::SharesGroup(_) => "shares-group",
        }
    }

    /// The verdict in words.
    pub fn words(&self) -> String {
        match self {
            Verdict::Assignable => "assignable".into(),
            Verdict::Bridge => "not assignable: a bridge (it forwards other devices' traffic)".into(),
            Verdict::Console => "not assignable: it is the hypervisor's console".into(),
            Verdict::Iommu => "not assignable: it is an IOMMU".into(),
            Verdict::NoIommu => {
                "not assignable: behind no IOMMU (its DMA could not be confined)".into()
            }
            Verdict::FirmwareReserved { range, source } => format!(
                "not assignable: uses firmware-reserved memory {range} ({source}), which its DMA would need inside the partition"
            ),
            Verdict::NoMemoryBar => "not assignable: no memory BAR to pass through".into(),
            Verdict::SharesGroup(others) => format!(
                "not assignable alone: shares an isolation group with {} (the IOMMU cannot keep their DMA apart)",
                others.join(", ")
            ),
        }
    }
}

/// One function's assessment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAssessment {
    /// Index into [`MachineFacts::functions`].
    pub function: usize,
    /// The unit and requester id its DMA reaches, if any.
    pub translation: Option<Translation>,
    /// Its isolation group (an index; functions with equal groups cannot be told apart).
    pub group: usize,
    /// The verdict.
    pub verdict: Verdict,
}

/// The whole machine's assessment.
#[derive(Debug, Clone)]
pub struct Assessment {
    /// VT-d, AMD-Vi or neither.
    pub architecture: Architecture,
    /// The units the table declares.
    pub units: Vec<UnitSummary>,
    /// One entry per function, in [`MachineFacts::functions`] order.
    pub devices: Vec<DeviceAssessment>,
    /// RMRR / IVMD regions.
    pub reserved: Vec<ReservedRegion>,
    /// Firmware problems found while resolving the tables, one per line.
    pub warnings: Vec<String>,
    /// VT-d: the DMAR flags (bit 0 INTR_REMAP, bit 1 X2APIC_OPT_OUT).
    pub dmar_flags: Option<u8>,
    /// AMD-Vi: I/O APIC and HPET entries the IVHDs list (interrupt remapping needs them).
    pub ivrs_specials: Option<(usize, usize)>,
}

/// Resolves the IOMMU tables against the functions and gives every function a verdict.
/// Never panics, whatever the tables hold: a table that does not parse is a warning, the
/// architecture it names has no units, and every device is behind no IOMMU.
pub fn assess(facts: &MachineFacts<'_>) -> Assessment {
    let bridges: Vec<PciBridge> = facts.functions.iter().filter_map(Function::as_bridge).collect();
    let platform = PlatformFacts {
        reserved: facts.reserved_memory.as_deref(),
        ioapic_ids: facts.ioapic_ids.as_deref(),
    };
    let mut out = Assessment {
        architecture: Architecture::None,
        units: Vec::new(),
        devices: Vec::new(),
        reserved: Vec::new(),
        warnings: Vec::new(),
        dmar_flags: None,
        ivrs_specials: None,
    };
    let translations: Vec<Option<Translation>> = if let Some(bytes) = facts.dmar {
        match Dmar::parse(bytes) {
            Ok(dmar) => vtd(&dmar, &bridges, &platform, facts, &mut out),
            Err(e) => {
                out.architecture = Architecture::Vtd;
                out.warnings.push(format!("[Firmware Bug] DMAR: {e}; VT-d unusable"));
                facts.functions.iter().map(|_| None).collect()
            }
        }
    } else if let Some(bytes) = facts.ivrs {
        match Ivrs::parse(bytes) {
            Ok(ivrs) => amdvi(&ivrs, &platform, facts, &mut out),
            Err(e) => {
                out.architecture = Architecture::AmdVi;
                out.warnings.push(format!("[Firmware Bug] IVRS: {e}; AMD-Vi unusable"));
                facts.functions.iter().map(|_| None).collect()
            }
        }
    } else {
        facts.functions.iter().map(|_| None).collect()
    };
    let groups = isolation_groups(&facts.functions, &translations);
    for (i, f) in facts.functions.iter().enumerate() {
        let verdict = verdict(facts, &out.reserved, &translations, &groups, i);
        out.devices.push(DeviceAssessment {
            function: i,
            translation: translations[i],
            group: groups[i],
            verdict,
        });
        let _ = f;
    }
    out
}

fn vtd(
    dmar: &Dmar<'_>,
    bridges: &[PciBridge],
    platform: &PlatformFacts<'_>,
    facts: &MachineFacts<'_>,
    out: &mut Assessment,
) -> Vec<Option<Translation>> {
    out.architecture = Architecture::Vtd;
    out.dmar_flags = Some(dmar.flags());
    let mut units = DmarUnits::new(dmar, bridges);
    for w in check_dmar(dmar, &mut units, platform).warnings {
        out.warnings.push(format!("{w}"));
    }
    out.units = units
        .units
        .iter()
        .map(|u| UnitSummary {
            index: u.index,
            base: u.base,
            segment: u.segment,
            usable: u.usable,
            include_all: u.include_pci_all,
            efr_from_table: None,
        })
        .collect();
    let (regions, problems) = reserved::from_dmar(dmar, bridges);
    for (base, e) in problems {
        out.warnings.push(format!("RMRR at {base:#x}: a device scope does not resolve: {e}"));
    }
    out.reserved = regions;
    facts.functions.iter().map(|f| units.translating_unit(bridges, f.segment, f.bdf)).collect()
}

fn amdvi(
    ivrs: &Ivrs<'_>,
    platform: &PlatformFacts<'_>,
    facts: &MachineFacts<'_>,
    out: &mut Assessment,
) -> Vec<Option<Translation>> {
    out.architecture = Architecture::AmdVi;
    let mut units = IvrsUnits::new(ivrs);
    for w in check_ivrs(ivrs, &mut units, platform).warnings {
        out.warnings.push(format!("{w}"));
    }
    let efr_of = |index: usize| ivrs.ivhds().nth(index).and_then(|h| h.efr);
    out.units = units
        .units
        .iter()
        .map(|u| UnitSummary {
            index: u.index,
            base: u.base,
            segment: u.segment,
            usable: u.usable,
            include_all: false,
            efr_from_table: efr_of(u.index),
        })
        .collect();
    let specials = units.units.iter().flat_map(|u| u.specials.iter());
    let ioapics =
        specials.clone().filter(|s| s.variety == crate::acpi::ivrs_entry::SPECIAL_IOAPIC).count();
    let hpets = specials.filter(|s| s.variety == crate::acpi::ivrs_entry::SPECIAL_HPET).count();
    out.ivrs_specials = Some((ioapics, hpets));
    out.reserved = reserved::from_ivrs(ivrs);
    facts.functions.iter().map(|f| units.translating_unit(f.segment, f.bdf.id())).collect()
}

/// Every function's isolation group (an index), from the one grouping the kernel enforces
/// ([`crate::acpi::groups::isolate`]): shared requester ids (bridges that take ownership,
/// firmware aliases, DMA-alias quirks), ports without ACS and multi-function devices
/// without ACS. A function with an ACS capability counts as isolating, as the boot enables
/// every ACS control it offers (and, as in Linux, a control it lacks is hard-wired).
pub fn isolation_groups(
    functions: &[Function],
    translations: &[Option<Translation>],
) -> Vec<usize> {
    let facts: Vec<FunctionFacts> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| FunctionFacts {
            segment: f.segment,
            bdf: f.bdf,
            ids: (f.vendor, f.device),
            bridge: f.as_bridge().map(|b| (b.secondary, b.subordinate, b.kind)),
            pcie_type: f.pcie_type,
            acs: f.acs.is_some(),
            routed_id: translations.get(i).copied().flatten().map(|t| t.requester_id),
        })
        .collect();
    let iso = isolate(&facts);
    functions
        .iter()
        .enumerate()
        .map(|(i, f)| iso.group_of(f.segment, f.bdf).map_or(usize::MAX - i, |g| g.id))
        .collect()
}

fn uses_console(f: &Function, console: Option<ConsoleAt>) -> bool {
    let Some(at) = console else { return false };
    f.bars.iter().any(|b| {
        let (want, memory) = match at {
            ConsoleAt::Port(p) => (p as u64, false),
            ConsoleAt::Mmio(a) => (a, true),
        };
        b.memory == memory && want >= b.base && want - b.base < b.size
    })
}

fn verdict(
    facts: &MachineFacts<'_>,
    reserved: &[ReservedRegion],
    translations: &[Option<Translation>],
    groups: &[usize],
    i: usize,
) -> Verdict {
    let f = &facts.functions[i];
    if f.is_bridge() {
        return Verdict::Bridge;
    }
    if f.class.0 == 0x08 && f.class.1 == 0x06 {
        return Verdict::Iommu;
    }
    if uses_console(f, facts.console) {
        return Verdict::Console;
    }
    if translations[i].is_none() {
        return Verdict::NoIommu;
    }
    if let Some(r) = reserved.iter().find(|r| r.applies_to(f.segment, f.bdf.id())) {
        return Verdict::FirmwareReserved { range: r.range, source: r.source };
    }
    if !f.bars.iter().any(|b| b.memory && b.size > 0) {
        return Verdict::NoMemoryBar;
    }
    // Bridges join a group (the IOMMU sees their ids) but are never assigned: the
    // devices that must go together are the other endpoints of the group.
    let others: Vec<String> = (0..facts.functions.len())
        .filter(|&j| j != i && groups[j] == groups[i] && !facts.functions[j].is_bridge())
        .map(|j| facts.functions[j].address())
        .collect();
    if !others.is_empty() {
        return Verdict::SharesGroup(others);
    }
    Verdict::Assignable
}
