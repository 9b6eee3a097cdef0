//! A VT-d unit left the way firmware leaves one is taken over and still confines DMA:
//! translation on, the invalidation queue running and halted by an invalid descriptor
//! (QEMU sets FSTS.IQE and stops at it, and refuses to turn the queue off while its head
//! is short of its tail). A fresh driver instance takes the unit over as boot would; then
//! a DMA through a new domain lands and a blocked device's DMA moves nothing.

use super::{isolation, translation};
use crate::ensure;
use crate::iommu::{self as kiommu, Units};
use crate::mem::KernelMemory;
use crate::mmio::MmioWindow;
use crate::testing::{TestContext, TestResult};
use iommu::platform::PhysMemory;
use iommu::vtd::InvalidationMode;

/// IQH, IQT, IQA and FSTS offsets, and FSTS.IQE.
const IQT: usize = 0x88;
const IQA: usize = 0x90;
const FSTS: usize = 0x34;
const FSTS_IQE: u32 = 1 << 4;
/// A descriptor of a type no unit knows (type 0xF).
const INVALID_DESCRIPTOR: u64 = 0xF;

/// Leaves unit `index` with its queue halted on an invalid descriptor, translation on.
fn break_queue(ctx: &mut TestContext<'_>, index: usize) -> TestResult {
    let Units::Vtd(units) = &ctx.platform.iommu.units else {
        return Err("not a VT-d machine".into());
    };
    let unit = units.get(index).ok_or("no such unit")?;
    ensure!(unit.invalidation_mode() == InvalidationMode::Queued, "the unit does not queue");
    ensure!(unit.is_enabled(), "the unit is not translating");
    let mut w = MmioWindow::map(unit.registers().base(), 0x1000)?;
    let iqa = w.read64(IQA);
    let (base, size) = (iqa & !0xFFF, 4096u64 << (iqa & 7));
    let tail = w.read64(IQT) & 0x7_FFF0;
    let mut mem = KernelMemory;
    mem.write_u64(base + tail, INVALID_DESCRIPTOR);
    mem.write_u64(base + tail + 8, 0);
    mem.flush_for_device(base + tail, 16);
    w.write64(IQT, (tail + 16) % size);
    let fsts = w.read32(FSTS);
    ensure!(fsts & FSTS_IQE != 0, "the unit did not flag the invalid descriptor (FSTS {fsts:#x})");
    log::info!("takeover: queue halted on an invalid descriptor (FSTS {fsts:#x}), translation on");
    Ok(())
}

/// The test.
pub fn takeover(ctx: &mut TestContext<'_>) -> TestResult {
    let bdf = ctx.platform.edus.first().ok_or("no edu device")?.bdf;
    let index = ctx.platform.iommu.route(bdf).ok_or("edu sits behind no IOMMU")?.unit;
    break_queue(ctx, index)?;
    let found = kiommu::take_over_vtd(&mut ctx.platform.iommu, index)?;
    log::info!("takeover: hand-off found {found:?}");
    ensure!(found.translation_was_on, "translation was not found on");
    ensure!(found.firmware_queue_stopped, "the running queue was not found");
    ensure!(found.bad_descriptor_replaced, "the halted queue's descriptor was not replaced");
    ensure!(found.stale_errors & FSTS_IQE != 0, "IQE was not cleared");
    ensure!(!found.firmware_queue_timed_out, "the queue did not drain after the fix-up");
    // The unit under the new instance translates, and blocks what it must.
    translation::four_k(ctx).map_err(|e| alloc::format!("after the take-over: {e}"))?;
    isolation::blocked(ctx).map_err(|e| alloc::format!("after the take-over: {e}"))
}
