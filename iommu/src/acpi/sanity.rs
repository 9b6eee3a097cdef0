//! Firmware sanity checks: the table mistakes real machines ship, reported in the spirit of
//! Linux's "[Firmware Bug]" messages. Findings are warnings; a unit that cannot be used
//! safely is marked unusable (and so skipped by the lookups) instead of failing boot.

mod checks;

use alloc::vec::Vec;
use core::fmt;

use super::pci::MemRange;
use super::resolve::{EntryProblem, ScopeProblem};

pub use checks::{check_dmar, check_ivrs};

/// Size of the AMD-Vi register window the checks assume (the architected registers).
pub const IVHD_WINDOW_SIZE: u64 = 0x4000;

/// What boot knows about the machine beyond the table; `None` skips the dependent checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlatformFacts<'a> {
    /// Firmware-reserved memory (e.g. E820 reserved, EFI reserved/runtime), inclusive ranges.
    pub reserved: Option<&'a [MemRange]>,
    /// The I/O APIC ids the MADT lists.
    pub ioapic_ids: Option<&'a [u8]>,
}

/// A remapping unit named in a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitRef {
    /// A DMAR DRHD, by index.
    Drhd {
        /// Index among the DRHDs.
        index: usize,
        /// Register base.
        base: u64,
    },
    /// An IVRS IVHD, by index among all IVHD blocks.
    Ivhd {
        /// Index among the IVHDs.
        index: usize,
        /// Register base.
        base: u64,
    },
}

impl fmt::Display for UnitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitRef::Drhd { index, base } => write!(f, "DRHD {index} (base {base:#x})"),
            UnitRef::Ivhd { index, base } => write!(f, "IVHD {index} (base {base:#x})"),
        }
    }
}

/// How serious a finding is (Linux's FW_BUG / FW_WARN / FW_INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Informational: something skipped or unusual.
    Info,
    /// Questionable but workable.
    Warn,
    /// Wrong; something is disabled because of it.
    Bug,
}

/// One finding of the sanity checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirmwareWarning {
    /// Register base is 0, all ones or not page aligned: the unit is unusable.
    InvalidRegisterBase {
        /// The unit.
        unit: UnitRef,
    },
    /// Two units' register windows overlap: the later one is unusable.
    RegisterOverlap {
        /// The unit made unusable.
        unit: UnitRef,
        /// The earlier unit it overlaps.
        other: UnitRef,
    },
    /// An RMRR whose limit is below its base.
    RmrrBackwards {
        /// RMRR index.
        index: usize,
        /// Base field.
        base: u64,
        /// Limit field.
        limit: u64,
    },
    /// An RMRR that does not start and end on 4 KiB boundaries.
    RmrrUnaligned {
        /// RMRR index.
        index: usize,
        /// The range.
        range: MemRange,
    },
    /// An RMRR that no firmware-reserved memory covers.
    RmrrNotReserved {
        /// RMRR index.
        index: usize,
        /// The range.
        range: MemRange,
    },
    /// Two RMRRs (or two IVMDs) cover common memory.
    RegionOverlap {
        /// "RMRR" or "IVMD".
        what: &'static str,
        /// Index of the first.
        first: usize,
        /// Index of the second.
        second: usize,
        /// The second's range.
        range: MemRange,
    },
    /// An IVMD with zero length or a range that wraps.
    IvmdBadRange {
        /// IVMD index.
        index: usize,
        /// Start address.
        start: u64,
        /// Length.
        size: u64,
    },
    /// An I/O APIC of the MADT that the IVRS does not list: no interrupt remapping.
    IoapicNotInIvrs {
        /// The IOAPIC id.
        id: u8,
    },
    /// An I/O APIC of the MADT in no DRHD scope although the DMAR offers interrupt remapping.
    IoapicNotInDmar {
        /// The IOAPIC id.
        id: u8,
    },
    /// One device id claimed by two units (the first keeps it).
    DeviceClaimedTwice {
        /// PCI segment.
        segment: u16,
        /// The device (requester) id.
        device_id: u16,
        /// The unit that keeps it.
        first: UnitRef,
        /// The other claimant.
        second: UnitRef,
    },
    /// A DRHD scope that cannot name a device.
    BadScope {
        /// The unit.
        unit: UnitRef,
        /// The problem.
        problem: ScopeProblem,
    },
    /// An IVHD entry sequence that makes no sense.
    BadEntries {
        /// The unit.
        unit: UnitRef,
        /// The problem.
        problem: EntryProblem,
    },
    /// A structure or block of unknown type, skipped.
    UnknownSkipped {
        /// "DMAR" or "IVRS".
        table: &'static str,
        /// Its type.
        kind: u16,
        /// Its table offset.
        offset: usize,
        /// Its length.
        length: u16,
    },
    /// The table describes no remapping unit at all.
    NoUnits {
        /// "DMAR" or "IVRS".
        table: &'static str,
    },
    /// The checksum is wrong (only when parsed with `Checksum::Tolerate`).
    BadChecksum {
        /// "DMAR" or "IVRS".
        table: &'static str,
    },
}

impl FirmwareWarning {
    /// How serious the finding is.
    pub fn severity(&self) -> Severity {
        use FirmwareWarning::*;
        match self {
            UnknownSkipped { .. } => Severity::Info,
            RegionOverlap { .. } | DeviceClaimedTwice { .. } | BadEntries { .. } => Severity::Warn,
            _ => Severity::Bug,
        }
    }
}

impl fmt::Display for FirmwareWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use FirmwareWarning::*;
        f.write_str(match self.severity() {
            Severity::Bug => "[Firmware Bug]: ",
            Severity::Warn => "[Firmware Warn]: ",
            Severity::Info => "[Firmware Info]: ",
        })?;
        match self {
            InvalidRegisterBase { unit } => {
                write!(f, "{unit}: register base is 0, all ones or unaligned; unit disabled")
            }
            RegisterOverlap { unit, other } => {
                write!(f, "{unit}: register window overlaps {other}; unit disabled")
            }
            RmrrBackwards { index, base, limit } => {
                write!(f, "RMRR {index}: bad range [{base:#018x}-{limit:#018x}], limit below base")
            }
            RmrrUnaligned { index, range } => {
                write!(f, "RMRR {index}: range {range} is not 4 KiB aligned")
            }
            RmrrNotReserved { index, range } => {
                write!(f, "RMRR {index}: no firmware reserved region can cover {range}")
            }
            RegionOverlap { what, first, second, range } => {
                write!(f, "{what} {second} {range} overlaps {what} {first}")
            }
            IvmdBadRange { index, start, size } => {
                write!(f, "IVMD {index}: bad range start {start:#x} length {size:#x}")
            }
            IoapicNotInIvrs { id } => {
                write!(f, "IOAPIC[{id}] not in IVRS table; interrupt remapping disabled")
            }
            IoapicNotInDmar { id } => {
                write!(f, "IOAPIC {id} has no remapping unit in DMAR; interrupt remapping disabled")
            }
            DeviceClaimedTwice { segment, device_id, first, second } => write!(
                f,
                "device {segment:04x}:{} claimed by {first} and {second}; {first} keeps it",
                super::Bdf::from_id(*device_id)
            ),
            BadScope { unit, problem } => write!(f, "{unit}: {problem}"),
            BadEntries { unit, problem } => write!(f, "{unit}: {problem}"),
            UnknownSkipped { table, kind, offset, length } => write!(
                f,
                "{table}: unknown structure type {kind:#x} at {offset:#x} (length {length}) skipped"
            ),
            NoUnits { table } => write!(f, "{table}: no remapping unit described"),
            BadChecksum { table } => write!(f, "{table}: checksum is wrong"),
        }
    }
}

/// The findings of one table's checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SanityReport {
    /// Every finding, in the order found.
    pub warnings: Vec<FirmwareWarning>,
    /// Indices of the units made unusable (also marked in the units themselves).
    pub unusable: Vec<usize>,
    /// Whether interrupt remapping must stay off (an IOAPIC is not covered).
    pub interrupt_remapping_unusable: bool,
}

impl SanityReport {
    pub(crate) fn disable(&mut self, index: usize, warning: FirmwareWarning) {
        self.warnings.push(warning);
        if !self.unusable.contains(&index) {
            self.unusable.push(index);
        }
    }
}

#[cfg(test)]
mod tests;
