//! The boot headers and the 32-bit to long-mode trampoline (`entry.S`), linked into the
//! kernel for `x86_64-unknown-none`. The kernel provides
//! `extern "C" fn kernel_main(magic: u32, info: u32) -> !`.

core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

unsafe extern "C" {
    static __load_start: u8;
    static __kernel_end: u8;
    static __boot_stack_bottom: u8;
}

/// Physical range `[start, end)` the kernel image occupies (code, data, bss, boot stack).
pub fn kernel_image() -> (u64, u64) {
    // Only the addresses of linker-defined symbols are taken; nothing is read.
    (core::ptr::addr_of!(__load_start) as u64, core::ptr::addr_of!(__kernel_end) as u64)
}

/// Lowest address of the boot stack (64 KiB, growing down), for guard checks.
pub fn boot_stack_bottom() -> u64 {
    core::ptr::addr_of!(__boot_stack_bottom) as u64
}
