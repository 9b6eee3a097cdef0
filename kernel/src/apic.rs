//! The local APIC (xAPIC, MMIO) as a tick source, so waits can HLT instead of spinning:
//! under QEMU with `-icount sleep=off` a halted CPU lets virtual time jump to the next
//! timer, which makes the edu device's 100 ms DMA delay cost no wall time.

use crate::mmio::MmioWindow;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;

/// Vector of the periodic timer.
pub const TIMER_VECTOR: u8 = 32;
const SVR: usize = 0xF0;
const EOI: usize = 0xB0;
const LVT_TIMER: usize = 0x320;
const TIMER_INITIAL: usize = 0x380;
const TIMER_DIVIDE: usize = 0x3E0;

static LAPIC: Mutex<Option<MmioWindow>> = Mutex::new(None);
static TICKS: AtomicU64 = AtomicU64::new(0);

fn timer_tick() {
    TICKS.fetch_add(1, Ordering::Relaxed);
    eoi();
}

/// Signals end-of-interrupt to the local APIC.
pub fn eoi() {
    if let Some(l) = LAPIC.lock().as_mut() {
        l.write32(EOI, 0);
    }
}

/// Enables the local APIC at its architectural address and starts a periodic timer.
pub fn init() -> Result<(), crate::mmio::MmioError> {
    mask_legacy_pic();
    let base = x86_64::registers::model_specific::Msr::new(0x1B);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 processor; reading it has no effect.
    let apic_base = unsafe { base.read() } & 0xF_FFFF_F000;
    let mut w = MmioWindow::map(apic_base, 0x1000)?;
    // Software enable, spurious vector 0xFF (an IRET-only gate in the IDT).
    w.write32(SVR, 0x100 | crate::arch::idt::SPURIOUS_VECTOR as u32);
    w.write32(TIMER_DIVIDE, 0x3); // divide by 16
    w.write32(LVT_TIMER, TIMER_VECTOR as u32 | 1 << 17); // periodic
    w.write32(TIMER_INITIAL, 100_000);
    *LAPIC.lock() = Some(w);
    crate::arch::idt::register_handler(TIMER_VECTOR, timer_tick);
    x86_64::instructions::interrupts::enable();
    Ok(())
}

/// Masks every line of both 8259 PICs: their default vectors (8-15) collide with CPU
/// exceptions, and the local APIC is our only interrupt source.
fn mask_legacy_pic() {
    use x86_64::instructions::port::Port;
    // SAFETY: 0x21 and 0xA1 are the 8259 data ports on every PC; writing 0xFF masks all
    // lines and has no other effect.
    unsafe {
        Port::<u8>::new(0x21).write(0xFF);
        Port::<u8>::new(0xA1).write(0xFF);
    }
}

/// Masks (or unmasks) the periodic timer: for tests that prove waits survive a dead timer.
pub fn set_timer_masked(masked: bool) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(l) = LAPIC.lock().as_mut() {
            let lvt = l.read32(LVT_TIMER);
            l.write32(LVT_TIMER, if masked { lvt | 1 << 16 } else { lvt & !(1 << 16) });
        }
    })
}

/// Interrupt request register of the local APIC (eight 32-bit words, 16 bytes apart).
const IRR: usize = 0x200;

/// Whether `vector` waits in the local APIC's interrupt request register: a fixed
/// interrupt that arrived while interrupts were disabled sits there until it is taken.
/// The interrupt-forgery tests read it with interrupts off to see what a device raised.
pub fn pending(vector: u8) -> bool {
    let (word, bit) = (usize::from(vector / 32), vector % 32);
    x86_64::instructions::interrupts::without_interrupts(|| {
        LAPIC.lock().as_ref().is_some_and(|l| l.read32(IRR + 0x10 * word) & (1 << bit) != 0)
    })
}

/// This CPU's local APIC id (the destination for device interrupts).
pub fn id() -> u32 {
    // With interrupts off: the timer's EOI takes the same lock, and an interrupt taken
    // while this holds it would spin forever.
    x86_64::instructions::interrupts::without_interrupts(|| {
        LAPIC.lock().as_ref().map_or(0, |l| l.read32(0x20) >> 24)
    })
}

/// Timer ticks since `init` (about 1.6 ms each under QEMU).
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// TSC cycles one timer tick may take at most before a wait gives up: generous (a tick
/// is about 1.6 ms under QEMU; 2^28 cycles is over 50 ms even at 5 GHz), only there so
/// a dead timer cannot stretch a wait without bound.
const MAX_CYCLES_PER_TICK: u64 = 1 << 28;
const CURRENT_COUNT: usize = 0x390;

/// Whether the timer will interrupt us: the APIC enabled, the timer unmasked and
/// counting. Halting is only safe then; otherwise nothing may ever wake the CPU.
fn timer_running() -> bool {
    x86_64::instructions::interrupts::without_interrupts(|| {
        LAPIC.lock().as_ref().is_some_and(|l| {
            l.read32(SVR) & 0x100 != 0
                && l.read32(LVT_TIMER) & 1 << 16 == 0
                && l.read32(CURRENT_COUNT) != 0
        })
    })
}

/// Waits until `done()` holds, halting between checks; gives up after `max_ticks` timer
/// ticks, or after `max_ticks` ticks' worth of TSC cycles when the timer stalls (then it
/// spins instead of halting).
pub fn wait_until(max_ticks: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = ticks();
    let tsc_start = rdtsc();
    let max_cycles = max_ticks.saturating_add(1).saturating_mul(MAX_CYCLES_PER_TICK);
    loop {
        if done() {
            return true;
        }
        if ticks().wrapping_sub(start) > max_ticks {
            return done();
        }
        if rdtsc().wrapping_sub(tsc_start) > max_cycles {
            log::error!(
                "apic: a wait of {max_ticks} ticks outlived its TSC bound: is the timer dead?"
            );
            return done();
        }
        if timer_running() {
            // `sti; hlt` back to back: no interrupt can slip in between the check and the halt.
            x86_64::instructions::interrupts::enable_and_hlt();
        } else {
            core::hint::spin_loop();
        }
    }
}

fn rdtsc() -> u64 {
    crate::arch::tsc()
}
