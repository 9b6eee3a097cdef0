//! VT-d isolation and fault recording, proven with DMA: a DMA to an unmapped IOVA moves no
//! data and leaves a fault record with the reason, source id and page QEMU must report; a
//! device with no context entry faults; a storm of faulting DMAs is counted in full while
//! the hypervisor keeps running and the console gets a rate-limited handful of lines.
//!
//! QEMU's unit has a single fault record and drops further faults from the same source id
//! while it is full, so faults are serviced after every DMA (as the interrupt would).

use super::{tsc, Rig};
use crate::ensure;
use crate::iommu::{self as kiommu, FaultEvent, KernelVtd, Units};
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::TestFrame;
use crate::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use iommu::domain::Domain;
use iommu::pgtable::vtd::VtdFormat;
use iommu::pgtable::Prot;

const SRC_IOVA: u64 = 0x3000_0000;
const DST_IOVA: u64 = 0x3000_1000;
const LEN: usize = 256;
/// VT-d fault reasons QEMU reports for these cases.
const REASON_CONTEXT_NOT_PRESENT: u8 = 0x2;
const REASON_WRITE: u8 = 0x5;
const REASON_READ: u8 = 0x6;

/// Runs `f` with a [`Rig`] on the VT-d unit translating edu number `edu_index`.
fn with_rig<R>(
    p: &mut Platform,
    edu_index: usize,
    f: impl FnOnce(&mut Rig<'_, KernelVtd>) -> Result<R, String>,
) -> Result<R, String> {
    let edu = p.edus.get_mut(edu_index).ok_or_else(|| format!("no edu device {edu_index}"))?;
    let route = p.iommu.route(edu.bdf).ok_or_else(|| format!("{} is behind no IOMMU", edu.bdf))?;
    let Units::Vtd(units) = &mut p.iommu.units else {
        return Err("not a VT-d machine".into());
    };
    let unit = units.get_mut(route.unit).ok_or("route names a missing unit")?;
    f(&mut Rig {
        unit,
        edu,
        rid: route.requester_id,
        unit_index: route.unit,
        ids: &mut p.iommu.domain_ids,
    })
}

/// Reads and clears every pending fault record; returns them and whether one overflowed.
fn take_faults(p: &mut Platform) -> (Vec<FaultEvent>, u64) {
    let mut seen = Vec::new();
    let sum = kiommu::service_faults(&mut p.iommu, |f| seen.push(*f));
    (seen, sum.overflows)
}

/// Exactly one fault, with the expected reason, direction, source and page.
fn expect_one(faults: &[FaultEvent], reason: u8, write: bool, rid: u16, page: u64) -> TestResult {
    ensure!(faults.len() == 1, "expected one fault record, got {faults:x?}");
    let f = faults[0];
    ensure!(f.reason == reason, "fault reason {:#x}, expected {reason:#x}", f.reason);
    ensure!(f.write == write, "fault direction: write={}, expected write={write}", f.write);
    ensure!(f.source_id == rid, "fault source {:#06x}, expected {rid:#06x}", f.source_id);
    ensure!(f.address == page, "fault address {:#x}, expected page {page:#x}", f.address);
    Ok(())
}

/// A domain mapping `src` read-only at SRC_IOVA and `dst` read-write at DST_IOVA, with
/// edu 0 attached to it.
fn attached_domain(p: &mut Platform, src: u64, dst: u64) -> Result<Domain<VtdFormat>, String> {
    with_rig(p, 0, |rig| {
        let mut dom = rig.new_domain()?;
        rig.map(&mut dom, SRC_IOVA, src, 4096, Prot::READ)?;
        rig.map(&mut dom, DST_IOVA, dst, 4096, Prot::READ | Prot::WRITE)?;
        rig.attach(&dom)?;
        Ok(dom)
    })
}

fn retire(p: &mut Platform, dom: Domain<VtdFormat>) -> TestResult {
    with_rig(p, 0, |rig| rig.retire(dom))
}

fn edu_err(e: crate::edu::EduError) -> String {
    format!("edu: {e}")
}

/// DMA to unmapped IOVAs: a write and a read, each moving no data and leaving a record.
pub fn isolation(ctx: &mut TestContext<'_>) -> TestResult {
    let p = &mut *ctx.platform;
    take_faults(p);
    let src = TestFrame::patterned(0x3C);
    let dst = TestFrame::patterned(0xD0);
    // Unmapped IOVAs equal to the physical addresses of sentinel frames: an untranslated
    // DMA would hit them.
    let write_sentinel = TestFrame::patterned(0x5E);
    let read_sentinel = TestFrame::patterned(0x6F);
    let rid = with_rig(p, 0, |rig| Ok(rig.rid))?;
    let dom = attached_domain(p, src.0, dst.0)?;
    let irqs_before = kiommu::fault_interrupts();
    let result = (|| -> TestResult {
        // Write fault: the buffer holds src's pattern, written to an unmapped IOVA.
        with_rig(p, 0, |rig| {
            rig.edu.read_from_memory(SRC_IOVA, 0, LEN).map_err(edu_err)?;
            rig.edu.write_to_memory(write_sentinel.0 + 0x80, 0, LEN).map_err(edu_err)
        })?;
        let (faults, _) = take_faults(p);
        ensure!(write_sentinel.holds(0x5E, 0, 0, 4096), "the faulting write reached memory");
        expect_one(&faults, REASON_WRITE, true, rid, write_sentinel.0)?;
        // Read fault: read an unmapped IOVA, write what came back to dst.
        with_rig(p, 0, |rig| {
            rig.edu.read_from_memory(read_sentinel.0 + 0x40, 0, LEN).map_err(edu_err)?;
            rig.edu.write_to_memory(DST_IOVA, 0, LEN).map_err(edu_err)
        })?;
        let (faults, _) = take_faults(p);
        ensure!(!dst.holds(0x6F, 0x40, 0, LEN as u64), "the faulting read returned the sentinel");
        ensure!(!dst.holds(0xD0, 0, 0, LEN as u64), "the DMA after the faulting read did not land");
        expect_one(&faults, REASON_READ, false, rid, read_sentinel.0)?;
        let irqs = kiommu::fault_interrupts() - irqs_before;
        ensure!(irqs >= 1, "no fault-event interrupt was taken for two recorded faults");
        log::info!(
            "isolation: write and read to unmapped IOVAs moved no data; reasons {REASON_WRITE:#x}/{REASON_READ:#x} from {rid:#06x}; {irqs} fault interrupts"
        );
        Ok(())
    })();
    retire(p, dom)?;
    result
}

/// The second edu device has no context entry: its DMA faults and moves no data.
pub fn no_context(ctx: &mut TestContext<'_>) -> TestResult {
    let p = &mut *ctx.platform;
    take_faults(p);
    let sentinel = TestFrame::patterned(0x4B);
    // Edu 0 attached keeps bus 0's root entry present: the fault is the context entry's.
    let (src, dst) = (TestFrame::patterned(1), TestFrame::patterned(2));
    let dom = attached_domain(p, src.0, dst.0)?;
    let result = (|| -> TestResult {
        let rid = with_rig(p, 1, |rig| {
            let entry = rig.unit.context_entry(rig.rid);
            ensure!(!entry.present(), "edu 1 has a context entry: {entry:x?}");
            rig.edu.write_to_memory(sentinel.0 + 0x10, 0, LEN).map_err(edu_err)?;
            Ok(rig.rid)
        })?;
        let (faults, _) = take_faults(p);
        ensure!(sentinel.holds(0x4B, 0, 0, 4096), "a device with no context entry wrote memory");
        expect_one(&faults, REASON_CONTEXT_NOT_PRESENT, true, rid, sentinel.0)?;
        log::info!("no context: {rid:#06x}'s DMA faulted with reason {REASON_CONTEXT_NOT_PRESENT:#x} and moved no data");
        Ok(())
    })();
    retire(p, dom)?;
    result
}

/// Faulting DMAs from edu 0 alone, serviced one by one (each leaves a record).
const STORM_SINGLES: u64 = 180;
/// Pairs of a faulting DMA from edu 0 and one from edu 1 before servicing: the second
/// finds the only record full and sets primary fault overflow.
const STORM_PAIRS: u64 = 10;

/// At least 200 faulting DMAs: every one counted (records plus overflows), the timer keeps
/// ticking, the console gets a rate-limited few lines, and a normal DMA works afterwards.
pub fn fault_storm(ctx: &mut TestContext<'_>) -> TestResult {
    let p = &mut *ctx.platform;
    take_faults(p);
    let (src, dst) = (TestFrame::patterned(0x71), TestFrame::patterned(0x72));
    let sentinel = TestFrame::patterned(0x73);
    let dom = attached_domain(p, src.0, dst.0)?;
    let rid = with_rig(p, 0, |rig| Ok(rig.rid))?;
    let (ticks0, lines0, irqs0) =
        (crate::apic::ticks(), kiommu::lines_logged(), kiommu::fault_interrupts());
    let tsc0 = tsc();
    let mut records = 0u64;
    let mut overflows = 0u64;
    let mut wrong = 0u64;
    let mut slowest_service = 0u64;
    let mut service = |p: &mut Platform, records: &mut u64, overflows: &mut u64| {
        let t = tsc();
        let (faults, over) = take_faults(p);
        slowest_service = slowest_service.max(tsc() - t);
        wrong +=
            faults.iter().filter(|f| f.reason != REASON_WRITE || f.source_id != rid).count() as u64;
        *records += faults.len() as u64;
        *overflows += over;
    };
    let result = (|| -> TestResult {
        for i in 0..STORM_SINGLES {
            let at = sentinel.0 + (i % 15) * 256;
            with_rig(p, 0, |rig| rig.edu.write_to_memory(at, 0, 64).map_err(edu_err))?;
            service(p, &mut records, &mut overflows);
        }
        for _ in 0..STORM_PAIRS {
            with_rig(p, 0, |rig| rig.edu.write_to_memory(sentinel.0, 0, 64).map_err(edu_err))?;
            with_rig(p, 1, |rig| rig.edu.write_to_memory(sentinel.0, 0, 64).map_err(edu_err))?;
            service(p, &mut records, &mut overflows);
        }
        Ok(())
    })();
    let cycles = tsc() - tsc0;
    let ticks = crate::apic::ticks() - ticks0;
    let lines = kiommu::lines_logged() - lines0;
    let irqs = kiommu::fault_interrupts() - irqs0;
    let dmas = STORM_SINGLES + 2 * STORM_PAIRS;
    let after = result.and_then(|()| {
        // Still working: a normal DMA through the same domain lands.
        with_rig(p, 0, |rig| rig.copy(SRC_IOVA, DST_IOVA, LEN))?;
        ensure!(dst.holds(0x71, 0, 0, LEN as u64), "after the storm a normal DMA did not land");
        Ok(())
    });
    retire(p, dom)?;
    after?;
    log::info!(
        "fault storm: {dmas} faulting DMAs, {records} records + {overflows} overflows counted, {irqs} fault interrupts, {lines} log lines, {ticks} timer ticks, {cycles} TSC cycles, slowest service {slowest_service} cycles"
    );
    ensure!(sentinel.holds(0x73, 0, 0, 4096), "a faulting DMA of the storm reached memory");
    ensure!(wrong == 0, "{wrong} records had the wrong reason or source");
    ensure!(
        records + overflows == dmas,
        "counted {records} records + {overflows} overflows for {dmas} faulting DMAs"
    );
    ensure!(overflows == STORM_PAIRS, "{overflows} overflows for {STORM_PAIRS} pairs");
    ensure!(irqs >= records / 2, "only {irqs} fault interrupts for {records} records");
    // Each DMA takes 100 ms of virtual time: a stalled timer would show few ticks.
    ensure!(ticks >= dmas * 10, "the timer advanced only {ticks} ticks during the storm");
    ensure!(lines * 4 <= dmas, "{lines} log lines for {dmas} faults: not rate-limited");
    Ok(())
}
