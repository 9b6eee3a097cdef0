//! Ending a run: QEMU's isa-debug-exit device, or a halt on real hardware.
//!
//! Writing V to port 0xf4 makes QEMU exit with status (V << 1) | 1, so success is 33 and
//! failure 35. QEMU's own exit 0 (which a triple fault also gives) never means success.

use x86_64::instructions::port::Port;

/// How the hypervisor's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked for succeeded (QEMU exit status 33).
    Success = 0x10,
    /// A test failed, a panic or an exception (QEMU exit status 35).
    Failure = 0x11,
}

/// Ends the run: exits QEMU, or halts forever where there is no debug-exit device.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit when present; on a machine without it the
    // write goes nowhere (the port is unassigned on PCs) and we halt below.
    unsafe { Port::new(0xf4).write(code as u32) };
    halt_forever()
}

/// Halts with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
