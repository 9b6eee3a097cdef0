//! Hand-off: a unit left with interrupt remapping on and a stale table that lets a device
//! through is taken over cleanly. A second driver on the same registers plays the previous
//! owner (firmware, or a kernel before a kexec-style restart): it enables the unit with its
//! own table and installs an entry delivering edu 0's MSI (VT-d) or leaves edu 0's
//! interrupts unmapped (AMD-Vi), and the MSI is shown to arrive (the control). Then the
//! hypervisor's driver takes the unit over again: on VT-d IRE is turned off and IRES
//! polled before the queue and the tables are reprogrammed, and the interrupt entry cache
//! is invalidated; afterwards the same MSI is refused.
//!
//! The previous owner's frames (a few pages) are left allocated: a firmware table would be
//! outside the hypervisor's memory anyway.

use super::interrupt_forgery::{observe, with_rig, COUNT_VECTOR, PLAIN_VECTOR};
use super::Rig;
use crate::ensure;
use crate::iommu::Units;
use crate::mem::KernelMemory;
use crate::mmio::MmioWindow;
use crate::msi::Msi;
use crate::testing::{TestContext, TestResult};
use crate::Platform;
use alloc::format;
use alloc::string::String;

/// Edu 0 raises its MSI; whether the counting vector (or the plain one) arrived.
fn raise(p: &mut Platform) -> Result<bool, String> {
    let edu = p.edus.get_mut(0).ok_or("no edu device")?;
    let (a, ()) = observe(|| edu.raise_interrupt(1))?;
    edu.ack_interrupt(1);
    Ok(a.count || a.plain)
}

/// The hand-off test on whichever IOMMU the machine has.
pub fn handoff(ctx: &mut TestContext<'_>) -> TestResult {
    let p = &mut *ctx.platform;
    let edu = p.edus.first().ok_or("no edu device")?;
    let m0 = Msi::find(edu.config()).ok_or("edu 0 has no MSI capability")?;
    let r0 = p.iommu.route(edu.bdf).map(|r| r.requester_id).ok_or("edu behind no IOMMU")?;
    let result = match p.iommu.units {
        Units::Vtd(_) => vtd(p, m0, r0),
        Units::Amd(_) => amd(p, m0, r0),
        Units::None => Err("this machine has no IOMMU".into()),
    };
    m0.set_enabled(false);
    result
}

fn vtd(p: &mut Platform, m0: Msi, r0: u16) -> TestResult {
    use iommu::vtd::{remappable_msi, IrState, Irte, VtdUnit};
    const HANDLE: u16 = 5;
    let (base, span) =
        with_rig!(p, Vtd, 0, |rig| (rig.unit.registers().base(), rig.unit.register_span()));
    let window = MmioWindow::map(base, span)?;
    let mut previous = VtdUnit::new(window, KernelMemory).map_err(|e| format!("{e}"))?;
    previous.enable().map_err(|e| format!("previous owner: enable: {e}"))?;
    let stale =
        Irte::remapped(COUNT_VECTOR, crate::apic::id(), false, r0).map_err(|e| format!("{e}"))?;
    previous.set_irte(HANDLE, stale).map_err(|e| format!("previous owner: {e}"))?;
    m0.program(remappable_msi(HANDLE).0, 0);
    let control = raise(p)?;
    let took = with_rig!(p, Vtd, 0, |rig| {
        let r = rig.unit.take_over().map_err(|e| format!("take over: {e}"));
        (r, rig.unit.ir_handoff(), rig.unit.interrupt_remapping())
    });
    took.0?;
    ensure!(control, "control: the previous owner's entry did not deliver edu 0's MSI");
    ensure!(took.1.was_enabled, "the take-over did not notice interrupt remapping left on");
    ensure!(matches!(took.2, IrState::Enabled { .. }), "remapping not back on: {:?}", took.2);
    let after = raise(p)?;
    ensure!(!after, "after the take-over edu 0's MSI still goes through the stale entry");
    with_rig!(p, Vtd, 0, |rig| rig
        .unit
        .handle_faults(|r| log::info!("handoff: the unit recorded: {r}")));
    log::info!(
        "handoff: a unit left with IR on and a stale entry (handle {HANDLE} -> vector {COUNT_VECTOR}, delivered) was taken over: IR off and IRES clear first, new table, entry cache invalidated; the MSI is refused now"
    );
    Ok(())
}

fn amd(p: &mut Platform, m0: Msi, r0: u16) -> TestResult {
    use iommu::amdvi::{AmdViUnit, DteInterrupts};
    let (base, max) = with_rig!(p, Amd, 0, |rig| (
        rig.unit.registers().base(),
        rig.unit.device_table_entries().saturating_sub(1).min(0xFFFF) as u16
    ));
    let window = MmioWindow::map(base, iommu::acpi::sanity::IVHD_WINDOW_SIZE as usize)?;
    let mut previous = AmdViUnit::new(window, KernelMemory, max).map_err(|e| format!("{e}"))?;
    previous.enable().map_err(|e| format!("previous owner: enable: {e}"))?;
    previous
        .set_interrupts(r0, DteInterrupts::unmapped())
        .map_err(|e| format!("previous owner: {e}"))?;
    // Unmapped, the MSI arrives as written: the plain vector.
    m0.program(0xFEE0_0000 | (u64::from(crate::apic::id() & 0xFF) << 12), u16::from(PLAIN_VECTOR));
    let control = raise(p)?;
    let took = with_rig!(p, Amd, 0, |rig| rig.unit.enable().map_err(|e| format!("take over: {e}")));
    took?;
    ensure!(control, "control: the previous owner's IV=0 entry did not let edu 0's MSI through");
    let after = raise(p)?;
    ensure!(!after, "after the take-over edu 0's MSI still passes unmapped");
    log::info!(
        "handoff: a unit left with a device table whose edu 0 entry has IV=0 (MSI delivered) was taken over: our table, every cache invalidated; the MSI is refused now"
    );
    Ok(())
}
