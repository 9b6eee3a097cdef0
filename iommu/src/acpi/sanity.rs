//! Firmware sanity checks: the table mistakes real machines ship, reported in the spirit of
//! Linux's "[Firmware Bug]" messages. Findings are warnings; a unit that cannot be used
//! safely is marked unusable (and so skipped by the lookups) instead of failing boot.

use alloc::vec::Vec;
use core::fmt;

use super::dmar::{Dmar, DMAR_FLAG_INTR_REMAP};
use super::ivrs::Ivrs;
use super::ivrs_entry::SPECIAL_IOAPIC;
use super::pci::MemRange;
use super::resolve::{DmarUnits, EntryProblem, IvrsUnits, ScopeProblem};
use super::scope::ScopeKind;
use super::DmarStructure;
use super::IvrsBlock;

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
            InvalidRegisterBase { unit } => write!(
                f,
                "{unit}: register base is 0, all ones or unaligned; unit disabled"
            ),
            RegisterOverlap { unit, other } => {
                write!(f, "{unit}: register window overlaps {other}; unit disabled")
            }
            RmrrBackwards { index, base, limit } => write!(
                f,
                "RMRR {index}: bad range [{base:#018x}-{limit:#018x}], limit below base"
            ),
            RmrrUnaligned { index, range } => {
                write!(f, "RMRR {index}: range {range} is not 4 KiB aligned")
            }
            RmrrNotReserved { index, range } => write!(
                f,
                "RMRR {index}: no firmware reserved region can cover {range}"
            ),
            RegionOverlap {
                what,
                first,
                second,
                range,
            } => write!(f, "{what} {second} {range} overlaps {what} {first}"),
            IvmdBadRange { index, start, size } => write!(
                f,
                "IVMD {index}: bad range start {start:#x} length {size:#x}"
            ),
            IoapicNotInIvrs { id } => write!(
                f,
                "IOAPIC[{id}] not in IVRS table; interrupt remapping disabled"
            ),
            IoapicNotInDmar { id } => write!(
                f,
                "IOAPIC {id} has no remapping unit in DMAR; interrupt remapping disabled"
            ),
            DeviceClaimedTwice {
                segment,
                device_id,
                first,
                second,
            } => write!(
                f,
                "device {segment:04x}:{} claimed by {first} and {second}; {first} keeps it",
                super::Bdf::from_id(*device_id)
            ),
            BadScope { unit, problem } => write!(f, "{unit}: {problem}"),
            BadEntries { unit, problem } => write!(f, "{unit}: {problem}"),
            UnknownSkipped {
                table,
                kind,
                offset,
                length,
            } => write!(
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
    fn disable(&mut self, index: usize, warning: FirmwareWarning) {
        self.warnings.push(warning);
        if !self.unusable.contains(&index) {
            self.unusable.push(index);
        }
    }
}

fn bad_base(base: u64) -> bool {
    base == 0 || base == u64::MAX || base & 0xfff != 0
}

fn window(base: u64, size: u64) -> MemRange {
    MemRange {
        start: base,
        end: base.saturating_add(size.saturating_sub(1)),
    }
}

/// Whether the union of `reserved` covers all of `range`.
fn covered(range: MemRange, reserved: &[MemRange]) -> bool {
    let mut sorted: Vec<MemRange> = reserved.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut next = range.start;
    for r in sorted {
        if r.start > next {
            break;
        }
        if r.end >= range.end {
            return true;
        }
        next = next.max(r.end.saturating_add(1));
    }
    false
}

/// Checks a DMAR and its resolved units; marks unusable units in `units`.
pub fn check_dmar(
    dmar: &Dmar<'_>,
    units: &mut DmarUnits,
    facts: &PlatformFacts<'_>,
) -> SanityReport {
    let mut report = SanityReport::default();
    if !dmar.checksum_ok() {
        report
            .warnings
            .push(FirmwareWarning::BadChecksum { table: "DMAR" });
    }
    if units.units.is_empty() {
        report
            .warnings
            .push(FirmwareWarning::NoUnits { table: "DMAR" });
    }
    let refs: Vec<UnitRef> = units
        .units
        .iter()
        .map(|u| UnitRef::Drhd {
            index: u.index,
            base: u.base,
        })
        .collect();
    let windows: Vec<UnitWindow> = units
        .units
        .iter()
        .zip(&refs)
        .map(|(u, r)| UnitWindow {
            unit: *r,
            index: u.index,
            window: window(u.base, u.register_size),
        })
        .collect();
    register_checks(&mut report, &windows);
    for u in &mut units.units {
        u.usable = !report.unusable.contains(&u.index);
    }
    for (u, r) in units.units.iter().zip(&refs) {
        for p in &u.unresolved {
            if !matches!(p, ScopeProblem::MissingBridge { .. }) {
                report.warnings.push(FirmwareWarning::BadScope {
                    unit: *r,
                    problem: *p,
                });
            }
        }
    }
    // The same PCI device listed in two units' scopes.
    for (i, (a, ra)) in units.units.iter().zip(&refs).enumerate() {
        for (b, rb) in units.units.iter().zip(&refs).skip(i + 1) {
            if a.segment != b.segment || !a.usable || !b.usable {
                continue;
            }
            let pci = |k: ScopeKind| matches!(k, ScopeKind::Endpoint | ScopeKind::Bridge);
            for s in a.scopes.iter().filter(|s| pci(s.kind)) {
                if b.scopes.iter().any(|t| pci(t.kind) && t.bdf == s.bdf) {
                    report.warnings.push(FirmwareWarning::DeviceClaimedTwice {
                        segment: a.segment,
                        device_id: s.bdf.id(),
                        first: *ra,
                        second: *rb,
                    });
                }
            }
        }
    }
    let mut rmrrs: Vec<MemRange> = Vec::new();
    for s in dmar.structures() {
        match s {
            DmarStructure::Rmrr(r) => {
                let index = rmrrs.len();
                let range = MemRange {
                    start: r.base,
                    end: r.limit,
                };
                rmrrs.push(range);
                if r.limit < r.base {
                    report.warnings.push(FirmwareWarning::RmrrBackwards {
                        index,
                        base: r.base,
                        limit: r.limit,
                    });
                    continue;
                }
                if r.base & 0xfff != 0 || r.limit.wrapping_add(1) & 0xfff != 0 {
                    report
                        .warnings
                        .push(FirmwareWarning::RmrrUnaligned { index, range });
                }
                if let Some(reserved) = facts.reserved {
                    if !covered(range, reserved) {
                        report
                            .warnings
                            .push(FirmwareWarning::RmrrNotReserved { index, range });
                    }
                }
            }
            DmarStructure::Unknown {
                kind,
                offset,
                length,
            } => report.warnings.push(FirmwareWarning::UnknownSkipped {
                table: "DMAR",
                kind,
                offset,
                length,
            }),
            _ => {}
        }
    }
    overlap_checks(&mut report, "RMRR", &rmrrs);
    if let Some(ids) = facts.ioapic_ids {
        if dmar.flags() & DMAR_FLAG_INTR_REMAP != 0 {
            for &id in ids {
                if units.ioapic_unit(id).is_none() {
                    report.interrupt_remapping_unusable = true;
                    report
                        .warnings
                        .push(FirmwareWarning::IoapicNotInDmar { id });
                }
            }
        }
    }
    report
}

/// Checks an IVRS and its resolved units; marks unusable units in `units`.
pub fn check_ivrs(
    ivrs: &Ivrs<'_>,
    units: &mut IvrsUnits<'_>,
    facts: &PlatformFacts<'_>,
) -> SanityReport {
    let mut report = SanityReport::default();
    if !ivrs.checksum_ok() {
        report
            .warnings
            .push(FirmwareWarning::BadChecksum { table: "IVRS" });
    }
    if units.units.is_empty() {
        report
            .warnings
            .push(FirmwareWarning::NoUnits { table: "IVRS" });
    }
    let refs: Vec<UnitRef> = units
        .units
        .iter()
        .map(|u| UnitRef::Ivhd {
            index: u.index,
            base: u.base,
        })
        .collect();
    let windows: Vec<UnitWindow> = units
        .units
        .iter()
        .zip(&refs)
        .map(|(u, r)| UnitWindow {
            unit: *r,
            index: u.index,
            window: window(u.base, IVHD_WINDOW_SIZE),
        })
        .collect();
    register_checks(&mut report, &windows);
    for u in &mut units.units {
        u.usable = !report.unusable.contains(&u.index);
    }
    for (u, r) in units.units.iter().zip(&refs) {
        for p in &u.problems {
            report.warnings.push(FirmwareWarning::BadEntries {
                unit: *r,
                problem: *p,
            });
        }
    }
    for (i, (a, ra)) in units.units.iter().zip(&refs).enumerate() {
        for (b, rb) in units.units.iter().zip(&refs).skip(i + 1) {
            if a.segment != b.segment || !a.usable || !b.usable {
                continue;
            }
            let clash = a.ranges.iter().find_map(|ra| {
                b.ranges
                    .iter()
                    .find(|rb| ra.first <= rb.last && rb.first <= ra.last)
                    .map(|rb| ra.first.max(rb.first))
            });
            if let Some(device_id) = clash {
                report.warnings.push(FirmwareWarning::DeviceClaimedTwice {
                    segment: a.segment,
                    device_id,
                    first: *ra,
                    second: *rb,
                });
            }
        }
    }
    let mut ivmds: Vec<MemRange> = Vec::new();
    for b in ivrs.blocks() {
        match b {
            IvrsBlock::Memory(m) => {
                let index = ivmds.len();
                let end = m.start.checked_add(m.size).and_then(|e| e.checked_sub(1));
                match end {
                    Some(end) if m.size != 0 => ivmds.push(MemRange {
                        start: m.start,
                        end,
                    }),
                    _ => {
                        report.warnings.push(FirmwareWarning::IvmdBadRange {
                            index,
                            start: m.start,
                            size: m.size,
                        });
                        ivmds.push(MemRange { start: 1, end: 0 });
                    }
                }
            }
            IvrsBlock::Unknown {
                kind,
                offset,
                length,
            } => report.warnings.push(FirmwareWarning::UnknownSkipped {
                table: "IVRS",
                kind: u16::from(kind),
                offset,
                length,
            }),
            IvrsBlock::Hardware(_) => {}
        }
    }
    overlap_checks(&mut report, "IVMD", &ivmds);
    if let Some(ids) = facts.ioapic_ids {
        for &id in ids {
            let listed = units.units.iter().any(|u| {
                u.usable
                    && u.specials
                        .iter()
                        .any(|s| s.variety == SPECIAL_IOAPIC && s.handle == id)
            });
            if !listed {
                report.interrupt_remapping_unusable = true;
                report
                    .warnings
                    .push(FirmwareWarning::IoapicNotInIvrs { id });
            }
        }
    }
    report
}

/// A unit as the register checks see it: who, its table index, its register window.
struct UnitWindow {
    unit: UnitRef,
    index: usize,
    window: MemRange,
}

/// Invalid bases and overlapping register windows; the later of two overlapping units goes.
fn register_checks(report: &mut SanityReport, units: &[UnitWindow]) {
    for (i, u) in units.iter().enumerate() {
        if bad_base(u.window.start) {
            report.disable(
                u.index,
                FirmwareWarning::InvalidRegisterBase { unit: u.unit },
            );
            continue;
        }
        let clash = units.iter().take(i).find(|o| {
            !bad_base(o.window.start)
                && o.window.overlaps(&u.window)
                && !report.unusable.contains(&o.index)
        });
        if let Some(o) = clash {
            report.disable(
                u.index,
                FirmwareWarning::RegisterOverlap {
                    unit: u.unit,
                    other: o.unit,
                },
            );
        }
    }
}

fn overlap_checks(report: &mut SanityReport, what: &'static str, ranges: &[MemRange]) {
    for (second, b) in ranges.iter().enumerate() {
        if b.end < b.start {
            continue;
        }
        if let Some(first) = ranges
            .iter()
            .take(second)
            .position(|a| a.end >= a.start && a.overlaps(b))
        {
            report.warnings.push(FirmwareWarning::RegionOverlap {
                what,
                first,
                second,
                range: *b,
            });
        }
    }
}

#[cfg(test)]
mod tests;
