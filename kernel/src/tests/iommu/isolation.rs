//! Isolation proven by data that does not move: DMA to an IOVA the domain does not map
//! (or maps read-only) changes nothing, and a device left with the boot-time blocking
//! entry (AMD-Vi: DTE V=1 TV=1 Mode=0 IR=IW=0; VT-d: no context entry) moves no data in
//! either direction. Each unmapped IOVA is the physical address of a sentinel frame, so
//! an untranslated DMA would be seen there.

use super::translation::LandsThrough;
use super::{on_edu_unit, IommuTest, Rig};
use crate::edu::EduError;
use crate::ensure;
use crate::iommu::{service_faults, Units};
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::{pattern, TestFrame};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

const LEN: usize = 2048;
const PRIMER_IOVA: u64 = 0x3_0000_0000;
const PAYLOAD_IOVA: u64 = 0x3_0000_1000;
const DST_IOVA: u64 = 0x3_0000_2000;

/// Seeds of the test frames (distinct, so any stray byte is attributable).
const PRIMER: u8 = 0x3c;
const PAYLOAD: u8 = 0xa4;
const DST: u8 = 0x96;
const SECRET: u8 = 0x5a;
const SENTINEL: u8 = 0xc2;

fn edu_failed(e: EduError) -> String {
    format!("edu: {e}")
}

/// Reads and writes through holes in an attached domain.
struct UnmappedMovesNothing;

impl IommuTest for UnmappedMovesNothing {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let primer = TestFrame::patterned(PRIMER);
        let payload = TestFrame::patterned(PAYLOAD);
        let dst = TestFrame::patterned(DST);
        let secret = TestFrame::patterned(SECRET);
        let sentinel = TestFrame::patterned(SENTINEL);
        let mut dom = rig.new_domain()?;
        rig.map(&mut dom, PRIMER_IOVA, primer.0, 4096, Prot::READ)?;
        rig.map(&mut dom, PAYLOAD_IOVA, payload.0, 4096, Prot::READ)?;
        rig.map(&mut dom, DST_IOVA, dst.0, 4096, Prot::READ | Prot::WRITE)?;
        rig.attach(&dom)?;
        let result = (|| -> TestResult {
            let mem = &crate::mem::KernelMemory;
            for hole in [secret.0, sentinel.0] {
                ensure!(dom.iova_to_phys(mem, hole).is_none(), "{hole:#x} is mapped");
            }
            let edu = &mut *rig.edu;
            // Read direction: load the primer, then read from the hole: no secret byte may
            // arrive (QEMU fills the buffer from unassigned memory: zeros), which the
            // write to DST shows.
            edu.read_from_memory(PRIMER_IOVA, 0, LEN).map_err(edu_failed)?;
            edu.read_from_memory(secret.0, 0, LEN).map_err(edu_failed)?;
            edu.write_to_memory(DST_IOVA, 0, LEN).map_err(edu_failed)?;
            let first: Vec<u8> = (0..8).map(|i| dst.byte(i)).collect();
            log::info!("isolation: after the refused read DST starts {first:02x?}");
            ensure!(
                (0..LEN as u64).all(|i| dst.byte(i) != pattern(SECRET, i)),
                "a read from unmapped IOVA {:#x} brought secret bytes",
                secret.0
            );
            ensure!(
                !dst.holds(DST, 0, 0, LEN as u64),
                "the write to DST did not land: the read check proves nothing"
            );
            // Write direction: load the payload, write it to the hole and to a read-only
            // page; neither may change; then the same buffer written to DST must land.
            edu.read_from_memory(PAYLOAD_IOVA, 0, LEN).map_err(edu_failed)?;
            edu.write_to_memory(sentinel.0, 0, LEN).map_err(edu_failed)?;
            edu.write_to_memory(PRIMER_IOVA, 0, LEN).map_err(edu_failed)?;
            edu.write_to_memory(DST_IOVA, 0, LEN).map_err(edu_failed)?;
            ensure!(
                sentinel.holds(SENTINEL, 0, 0, 4096),
                "a write to unmapped IOVA {:#x} landed at that physical address",
                sentinel.0
            );
            ensure!(primer.holds(PRIMER, 0, 0, 4096), "a write through a read-only mapping landed");
            ensure!(secret.holds(SECRET, 0, 0, 4096), "the secret frame changed");
            ensure!(payload.holds(PAYLOAD, 0, 0, 4096), "the payload frame changed");
            ensure!(
                dst.holds(PAYLOAD, 0, 0, LEN as u64),
                "the payload did not reach DST: the refused writes prove nothing"
            );
            Ok(())
        })();
        rig.retire(dom)?;
        result
    }
}

/// DMA through holes of an attached domain moves no data; then the unit's fault records
/// or event log are serviced (QEMU 7.2's AMD-Vi writes no events: servicing must return
/// without hanging) and a translated DMA still works.
pub fn unmapped(ctx: &mut TestContext<'_>) -> TestResult {
    let bdf = ctx.platform.edus.first().ok_or("no edu device")?.bdf;
    let rid = ctx.platform.iommu.route(bdf).ok_or("edu sits behind no IOMMU")?.requester_id;
    let moved = on_edu_unit(ctx, 0, &UnmappedMovesNothing);
    let mut ours = Vec::new();
    let sum = service_faults(&mut ctx.platform.iommu, |f| ours.push(*f));
    let amd = matches!(ctx.platform.iommu.units, Units::Amd(_));
    log::info!(
        "isolation: servicing faults found {} ({} overflows), {} page faults: {ours:x?}",
        sum.faults,
        sum.overflows,
        ours.len()
    );
    moved?;
    if amd {
        // Events are optional (QEMU 7.2 logs none); any that came must be ours.
        ensure!(
            ours.iter().all(|f| f.source_id == rid),
            "an event names a device other than {rid:#06x}: {ours:x?}"
        );
        if sum.faults == 0 {
            log::info!("isolation: no AMD-Vi events (QEMU 7.2 never writes its event log)");
        }
    } else {
        ensure!(
            ours.iter().any(|f| f.source_id == rid),
            "VT-d recorded no fault from {rid:#06x} for the refused DMAs"
        );
    }
    ensure!(service_faults(&mut ctx.platform.iommu, |_| {}).faults == 0, "faults kept coming");
    // The unit still translates after the faults (and after servicing found nothing).
    on_edu_unit(ctx, 0, &LandsThrough { size: 4096, iova: 0x3_0000_5000, offset: 0x800 })
}

/// The second edu, never attached by the boot: reads and writes move nothing. Its buffer
/// is then looked at through a one-page domain, which must not hold the secret.
struct BlockedMovesNothing;

impl IommuTest for BlockedMovesNothing {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let secret = TestFrame::patterned(SECRET);
        let sentinel = TestFrame::patterned(SENTINEL);
        let dst = TestFrame::patterned(DST);
        let edu = &mut *rig.edu;
        edu.read_from_memory(secret.0, 0, LEN).map_err(edu_failed)?;
        edu.write_to_memory(sentinel.0, 0, LEN).map_err(edu_failed)?;
        ensure!(sentinel.holds(SENTINEL, 0, 0, 4096), "a blocked device's write landed");
        ensure!(secret.holds(SECRET, 0, 0, 4096), "the secret frame changed");
        // What did the blocked read bring? Let the device write its buffer to DST.
        let mut dom = rig.new_domain()?;
        rig.map(&mut dom, DST_IOVA, dst.0, 4096, Prot::READ | Prot::WRITE)?;
        rig.attach(&dom)?;
        let shown = rig.edu.write_to_memory(DST_IOVA, 0, LEN).map_err(edu_failed);
        rig.retire(dom)?;
        shown?;
        ensure!(
            (0..LEN as u64).all(|i| dst.byte(i) != pattern(SECRET, i)),
            "a blocked device's read brought secret bytes"
        );
        ensure!(!dst.holds(DST, 0, 0, LEN as u64), "the look-back write did not land");
        Ok(())
    }
}

/// A device with the blocking entry moves no data either way (AMD-Vi: the DTE is checked
/// to be the blocking one before and after).
pub fn blocked(ctx: &mut TestContext<'_>) -> TestResult {
    let bdf = ctx.platform.edus.get(1).ok_or("needs a second edu device")?.bdf;
    let route = ctx.platform.iommu.route(bdf).ok_or("edu sits behind no IOMMU")?;
    let dte_blocking = |ctx: &TestContext<'_>| -> TestResult {
        if let Units::Amd(units) = &ctx.platform.iommu.units {
            let unit = units.get(route.unit).ok_or("no such unit")?;
            let dte = unit.device_entry(route.requester_id).ok_or("no device table entry")?;
            ensure!(
                dte.is_blocking() && dte.reserved_bits_clear(),
                "device {:#06x} has DTE {:#x?}, not the blocking one",
                route.requester_id,
                dte.quads()
            );
        }
        Ok(())
    };
    dte_blocking(ctx)?;
    on_edu_unit(ctx, 1, &BlockedMovesNothing)?;
    dte_blocking(ctx).map_err(|e| format!("after the look-back: {e}"))
}
