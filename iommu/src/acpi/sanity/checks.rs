//! The checks themselves, one table at a time.

use alloc::vec::Vec;

use super::{FirmwareWarning, PlatformFacts, SanityReport, UnitRef, IVHD_WINDOW_SIZE};
use crate::acpi::dmar::{Dmar, DmarStructure, DMAR_FLAG_INTR_REMAP};
use crate::acpi::ivrs::{Ivrs, IvrsBlock};
use crate::acpi::ivrs_entry::SPECIAL_IOAPIC;
use crate::acpi::pci::MemRange;
use crate::acpi::resolve::{DmarUnits, IvrsUnits, ScopeProblem};
use crate::acpi::scope::ScopeKind;

fn bad_base(base: u64) -> bool {
    base == 0 || base == u64::MAX || base & 0xfff != 0
}

fn window(base: u64, size: u64) -> MemRange {
    MemRange { start: base, end: base.saturating_add(size.saturating_sub(1)) }
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
        report.warnings.push(FirmwareWarning::BadChecksum { table: "DMAR" });
    }
    if units.units.is_empty() {
        report.warnings.push(FirmwareWarning::NoUnits { table: "DMAR" });
    }
    let refs: Vec<UnitRef> =
        units.units.iter().map(|u| UnitRef::Drhd { index: u.index, base: u.base }).collect();
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
                report.warnings.push(FirmwareWarning::BadScope { unit: *r, problem: *p });
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
                let range = MemRange { start: r.base, end: r.limit };
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
                    report.warnings.push(FirmwareWarning::RmrrUnaligned { index, range });
                }
                if let Some(reserved) = facts.reserved {
                    if !covered(range, reserved) {
                        report.warnings.push(FirmwareWarning::RmrrNotReserved { index, range });
                    }
                }
            }
            DmarStructure::Unknown { kind, offset, length } => report
                .warnings
                .push(FirmwareWarning::UnknownSkipped { table: "DMAR", kind, offset, length }),
            _ => {}
        }
    }
    overlap_checks(&mut report, "RMRR", &rmrrs);
    if let Some(ids) = facts.ioapic_ids {
        if dmar.flags() & DMAR_FLAG_INTR_REMAP != 0 {
            for &id in ids {
                if units.ioapic_unit(id).is_none() {
                    report.interrupt_remapping_unusable = true;
                    report.warnings.push(FirmwareWarning::IoapicNotInDmar { id });
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
        report.warnings.push(FirmwareWarning::BadChecksum { table: "IVRS" });
    }
    if units.units.is_empty() {
        report.warnings.push(FirmwareWarning::NoUnits { table: "IVRS" });
    }
    let refs: Vec<UnitRef> =
        units.units.iter().map(|u| UnitRef::Ivhd { index: u.index, base: u.base }).collect();
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
            report.warnings.push(FirmwareWarning::BadEntries { unit: *r, problem: *p });
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
                    Some(end) if m.size != 0 => ivmds.push(MemRange { start: m.start, end }),
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
            IvrsBlock::Unknown { kind, offset, length } => {
                report.warnings.push(FirmwareWarning::UnknownSkipped {
                    table: "IVRS",
                    kind: u16::from(kind),
                    offset,
                    length,
                })
            }
            IvrsBlock::Hardware(_) => {}
        }
    }
    overlap_checks(&mut report, "IVMD", &ivmds);
    if let Some(ids) = facts.ioapic_ids {
        for &id in ids {
            let listed = units.units.iter().any(|u| {
                u.usable && u.specials.iter().any(|s| s.variety == SPECIAL_IOAPIC && s.handle == id)
            });
            if !listed {
                report.interrupt_remapping_unusable = true;
                report.warnings.push(FirmwareWarning::IoapicNotInIvrs { id });
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
            report.disable(u.index, FirmwareWarning::InvalidRegisterBase { unit: u.unit });
            continue;
        }
        let clash = units.iter().take(i).find(|o| {
            !bad_base(o.window.start)
                && o.window.overlaps(&u.window)
                && !report.unusable.contains(&o.index)
        });
        if let Some(o) = clash {
            report
                .disable(u.index, FirmwareWarning::RegisterOverlap { unit: u.unit, other: o.unit });
        }
    }
}

fn overlap_checks(report: &mut SanityReport, what: &'static str, ranges: &[MemRange]) {
    for (second, b) in ranges.iter().enumerate() {
        if b.end < b.start {
            continue;
        }
        if let Some(first) =
            ranges.iter().take(second).position(|a| a.end >= a.start && a.overlaps(b))
        {
            report.warnings.push(FirmwareWarning::RegionOverlap { what, first, second, range: *b });
        }
    }
}
