//! [`guest::scenario::PLATFORM_REDELIVERY`]: one interrupt whose delivery the hypervisor
//! interrupts. The guest arms its local APIC timer once, moves its stack to
//! [`DEMAND_PAGE`] (which the hypervisor maps only when it is first touched), and spins
//! with interrupts on without touching the stack: the first access to the page is the
//! CPU pushing the timer interrupt's frame, so the interrupt's delivery exits. The
//! handler (the platform scenario's APIC timer handler) counts and EOIs; the guest reports the count (exactly 1 when the hypervisor
//! completed the delivery) and the CS word of the frame it finds on the page.

use super::platform::{apic_write, lapic_handler, spurious_handler, LAPIC_TICKS};
use super::platform::{LVT_TIMER, SPURIOUS_VECTOR, SVR, TDCR, TMICT, TPR};
use super::{report, Channel};
use core::arch::asm;
use core::sync::atomic::Ordering;
use guest::{check, BootInfo, DEMAND_PAGE, LAPIC_COUNT, LAPIC_TIMER_VECTOR};

/// Runs the scenario; returns the status for DONE (0 when the one interrupt arrived once,
/// on the demand page).
pub fn run(ch: Channel, info: &BootInfo) -> u64 {
    // SAFETY: masking interrupts has no memory effect (a VMX guest starts with IF = 1).
    unsafe { asm!("cli", options(nomem, nostack)) };
    super::idt::load(&[(LAPIC_TIMER_VECTOR, lapic_handler), (SPURIOUS_VECTOR, spurious_handler)]);
    apic_write(SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    apic_write(TPR, 0);
    // One-shot (LVT mode 0), unmasked, divide by 16: one interrupt after 5 ms.
    apic_write(TDCR, 0x3);
    apic_write(LVT_TIMER, u32::from(LAPIC_TIMER_VECTOR));
    let hz = if info.tsc_hz == 0 { 1 << 31 } else { info.tsc_hz };
    let span = hz / 1000 * guest::PLATFORM_WAIT_MS;
    apic_write(TMICT, LAPIC_COUNT);
    // SAFETY: RDTSC only reads the time-stamp counter (not intercepted).
    let deadline = unsafe { core::arch::x86_64::_rdtsc() }.wrapping_add(span);
    // SAFETY: the stack moves to the top of the demand page (inside the identity map,
    // mapped by the hypervisor on its first access) only for a loop that neither pushes
    // nor calls; the timer's gate runs its handler there; RSP is put back (from R12)
    // with interrupts off again before any Rust code runs.
    unsafe {
        asm!(
            "mov r12, rsp",
            "mov rsp, {top}",
            "sti",
            "2:",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "cmp rax, {deadline}",
            "jb 2b",
            "cli",
            "mov rsp, r12",
            top = in(reg) DEMAND_PAGE + 4096,
            deadline = in(reg) deadline,
            out("rax") _,
            out("rdx") _,
            out("r12") _,
        );
    }
    apic_write(TMICT, 0);
    let ticks = LAPIC_TICKS.load(Ordering::Relaxed);
    // The frame the CPU pushed: SS, RSP, RFLAGS, CS, RIP down from the page's top.
    // SAFETY: the demand page is inside the identity map (mapped by the hypervisor on the
    // first access, this one if no interrupt came).
    let cs = unsafe { core::ptr::read_volatile((DEMAND_PAGE + 4096 - 32) as *const u64) };
    report(ch, check::REDELIVERY_TICKS, ticks);
    report(ch, check::REDELIVERY_FRAME_CS, cs);
    u64::from(ticks != 1 || cs != 0x08)
}
