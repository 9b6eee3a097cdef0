//! An AMD-Vi unit left the way firmware (or a previous kernel) leaves one is taken over and
//! still confines DMA. What QEMU can show of that state: translation on with a device
//! table entry of the previous owner's that lets a device through untranslated (V = 0),
//! and a Control register full of the previous owner's bits (ordering and isochrony
//! bits, completion and event interrupts, guest virtual APIC, its own invalidation
//! time-out). The control: before the take-over that device's DMA lands in host memory,
//! so the test can fail. A fresh driver instance then takes the unit over as boot would:
//! Control is built from zero (the previous owner's bits gone), the device's DMA moves
//! nothing, and a DMA through a new domain still lands.

use super::{isolation, translation};
use crate::ensure;
use crate::iommu::{self as kiommu, Units};
use crate::mem::KernelMemory;
use crate::mmio::MmioWindow;
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::{pattern, TestFrame};
use alloc::format;
use iommu::amdvi::regs::{self, Control};
use iommu::platform::PhysMemory;

/// Bytes of a patterned frame the second edu's DMA copies into a fresh host frame (0
/// when the unit refuses it).
fn bytes_landed(ctx: &mut TestContext<'_>) -> Result<usize, alloc::string::String> {
    let edu = ctx.platform.edus.get_mut(1).ok_or("needs a second edu device")?;
    let (source, target) = (TestFrame::patterned(0x11), TestFrame::patterned(0x5A));
    let moved = edu
        .read_from_memory(source.0, 0, 2048)
        .and_then(|()| edu.write_to_memory(target.0, 0, 2048));
    let landed = (0..2048u64).filter(|&i| target.byte(i) == pattern(0x11, i)).count();
    // A refused DMA may end in an edu error: what counts is what landed.
    if let Err(e) = moved {
        log::info!("takeover: edu 1's DMA ended with {e}");
    }
    Ok(landed)
}

/// The test.
pub fn takeover(ctx: &mut TestContext<'_>) -> TestResult {
    let edu1 = ctx.platform.edus.get(1).ok_or("needs a second edu device")?.bdf;
    let route = ctx.platform.iommu.route(edu1).ok_or("edu 1 sits behind no IOMMU")?;
    let Units::Amd(units) = &ctx.platform.iommu.units else {
        return Err("not an AMD-Vi machine".into());
    };
    let unit = units.get(route.unit).ok_or("no such unit")?;
    ensure!(unit.is_enabled(), "the unit is not translating");
    ensure!(bytes_landed(ctx)? == 0, "edu 1 is not blocked to begin with");
    // The previous owner's state: edu 1's entry V = 0 (untranslated), Control full of bits.
    let Units::Amd(units) = &ctx.platform.iommu.units else { return Err("not AMD-Vi".into()) };
    let mut w = MmioWindow::map(units[route.unit].registers().base(), 0x4000)?;
    let table = w.read64(regs::DEVICE_TABLE_BASE) & regs::BASE_ADDRESS_MASK;
    let entry = table + 32 * u64::from(route.requester_id);
    let mut mem = KernelMemory;
    mem.write_u64(entry, 0);
    mem.flush_for_device(entry, 32);
    let firmware_bits = Control::HT_TUN_EN
        | Control::PASS_PW
        | Control::RES_PASS_PW
        | Control::ISOC
        | Control::COM_WAIT_INT_EN
        | Control::GA_EN
        | Control::from_bits_retain(7 << 5);
    let control = Control::from_bits_retain(w.read64(regs::CONTROL));
    w.write64(regs::CONTROL, (control | firmware_bits).bits());
    let leaked = bytes_landed(ctx)?;
    log::info!(
        "takeover: previous owner's state: edu 1 ({:#06x}) with V = 0 wrote {leaked} bytes into \
         host memory; Control {:#x}",
        route.requester_id,
        w.read64(regs::CONTROL)
    );
    ensure!(
        leaked == 2048,
        "control: the pass-through entry moved {leaked} bytes, so the test cannot fail"
    );
    kiommu::take_over_amd(&mut ctx.platform.iommu, route.unit)?;
    let now = Control::from_bits_retain(w.read64(regs::CONTROL));
    log::info!("takeover: after the take-over Control {:#x}", now.bits());
    ensure!(
        !now.intersects(Control::GA_EN | Control::COM_WAIT_INT_EN | Control::ISOC),
        "previous owner's Control bits survived: {now:?}"
    );
    ensure!((now.bits() >> 5) & 7 == 4, "invalidation time-out not the driver's 1 s");
    let after = bytes_landed(ctx)?;
    ensure!(after == 0, "after the take-over edu 1 still wrote {after} bytes");
    log::info!("takeover: edu 1's DMA moved nothing after the take-over");
    translation::four_k(ctx).map_err(|e| format!("after the take-over: {e}"))?;
    isolation::blocked(ctx).map_err(|e| format!("after the take-over: {e}"))
}
