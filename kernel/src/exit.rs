//! Ending a run: QEMU's isa-debug-exit device, Bochs' shutdown port, or a halt on real
//! hardware.
//!
//! Writing V to port 0xf4 makes QEMU exit with status (V << 1) | 1, so success is 33 and
//! failure 35. QEMU's own exit 0 (which a triple fault also gives) never means success.
//! Bochs has no such device: with `exit=bochs` the run prints `run ended (success)` or
//! `run ended (failure)` and writes "Shutdown" to port 0x8900, which ends Bochs with its
//! own message; the harness (`xtask/src/bochs.rs`) judges the two together.

use core::sync::atomic::{AtomicBool, Ordering};
use x86_64::instructions::port::Port;

/// `exit=bochs` was given.
static BOCHS: AtomicBool = AtomicBool::new(false);

/// Ends later runs through Bochs' shutdown port (`exit=bochs`).
pub fn use_bochs_shutdown() {
    BOCHS.store(true, Ordering::SeqCst);
}

/// Bochs' shutdown port: the bytes of "Shutdown" written to it in order power Bochs off.
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

/// How the hypervisor's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    /// Everything asked for succeeded (QEMU exit status 33).
    Success = 0x10,
    /// A test failed, a panic or an exception (QEMU exit status 35).
    Failure = 0x11,
}

/// Ends the run: exits QEMU through its debug-exit port when running under a hypervisor;
/// on bare metal (where port 0xf4 may belong to some device) it says so and halts.
pub fn exit(code: ExitCode) -> ! {
    // Whatever the boot said before a console was chosen is not lost.
    crate::console::fall_back();
    let words = if code == ExitCode::Success { "success" } else { "failure" };
    if BOCHS.load(Ordering::SeqCst) {
        crate::console::emergency_print(format_args!("run ended ({words})\n"));
        for b in b"Shutdown" {
            // SAFETY: only with `exit=bochs`, which the Bochs harness passes: port 0x8900
            // is Bochs' shutdown port, and nothing else is left to run.
            unsafe { Port::new(BOCHS_SHUTDOWN_PORT).write(*b) };
        }
    } else if under_hypervisor() {
        // SAFETY: under a hypervisor, port 0xf4 is QEMU's isa-debug-exit when present;
        // a hypervisor without it ignores the write (or reports it), and we halt below.
        unsafe { Port::new(0xf4).write(code as u32) };
    } else {
        crate::console::emergency_print(format_args!("run ended ({words}): halting\n"));
    }
    halt_forever()
}

/// CPUID leaf 1 ECX bit 31: set by hypervisors for their guests, clear on bare metal.
fn under_hypervisor() -> bool {
    core::arch::x86_64::__cpuid(1).ecx & 1 << 31 != 0
}

/// Halts with interrupts off.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
