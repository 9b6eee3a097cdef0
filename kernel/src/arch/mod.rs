//! CPU set-up: descriptor tables and exception handling.

pub mod gdt;
pub mod idt;

/// The time-stamp counter (cycles since reset), for time stamps, waits and cost reports.
pub fn tsc() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 processor, has no memory-safety preconditions
    // and only reads the counter (CR4.TSD does not apply in ring 0).
    unsafe { core::arch::x86_64::_rdtsc() }
}
