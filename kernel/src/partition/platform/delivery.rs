//! The run loop's side of the guest platform: what is offered before each entry, how a
//! HLT with interrupts on waits, and an emulated IN's result.

use super::super::interrupts::DeviceInterrupt;
use super::super::vcpu::{Reg, VcpuBackend};
use super::super::Budget;
use super::pci::PciHost;
use super::GuestPlatform;

/// An emulated IN's result in RAX: `size` bytes of `value`, the rest of RAX kept for 8-
/// and 16-bit accesses (a 32-bit one zero-extends).
pub fn set_in_result(vcpu: &mut dyn VcpuBackend, size: u8, value: u32) {
    let old = vcpu.reg(Reg::Rax);
    let keep = match size {
        1 => old & !0xFF,
        2 => old & !0xFFFF,
        _ => 0,
    };
    vcpu.set_rax(keep | (u64::from(value) & super::decode::mask(size.clamp(1, 4))));
}

/// The partition's device interrupt sources: the first device's MSI, every device's
/// MSI-X (a Linux guest's configuration space).
pub struct Devices<'a> {
    /// The first device's MSI.
    pub msi: Option<&'a mut DeviceInterrupt>,
    /// The devices' MSI-X.
    pub pci: Option<&'a mut PciHost>,
}

impl Devices<'_> {
    /// Every pending device interrupt into the local APIC's IRR, as the guest's vector.
    fn deliver(&mut self, p: &mut GuestPlatform) {
        if let Some(d) = self.msi.as_deref_mut() {
            while let Some(v) = d.next_injection() {
                p.deliver_msi(v);
            }
        }
        if let Some(pci) = self.pci.as_deref_mut() {
            pci.drain(&mut |v| p.deliver_msi(v));
        }
    }
}

/// Before an entry: device MSIs into the local APIC, then the platform's choice as the
/// virtual interrupt to offer (or none: a stale request is withdrawn).
pub fn platform_offer(p: &mut GuestPlatform, mut devices: Devices<'_>, vcpu: &mut dyn VcpuBackend) {
    devices.deliver(p);
    match p.offer() {
        Some(vector) => vcpu.inject_interrupt(vector),
        None => vcpu.cancel_interrupt(),
    }
}

/// HLT with interrupts enabled: sleeps (host HLT, woken by the host's timer tick or a
/// device interrupt) until the platform has an interrupt to deliver (true) or the run's
/// tick budget has passed since `start` (false).
pub fn wait_for_interrupt(
    p: &mut GuestPlatform,
    mut devices: Devices<'_>,
    start: u64,
    budget: Budget,
) -> bool {
    loop {
        devices.deliver(p);
        if p.interrupt_ready() {
            return true;
        }
        if crate::apic::ticks().wrapping_sub(start) > budget.ticks {
            return false;
        }
        // Halt until the host's next interrupt (its timer ticks every ~1.6 ms), unless
        // the platform's next deadline is nearer than a tenth of a millisecond: then spin
        // for it.
        let now = p.clock().now();
        let near = p.clock().hz() / 10_000;
        match p.next_deadline() {
            Some(d) if d.saturating_sub(now) < near => core::hint::spin_loop(),
            _ => x86_64::instructions::interrupts::enable_and_hlt(),
        }
    }
}
