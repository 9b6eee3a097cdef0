//! The guest platform scenarios (`guest::scenario::PLATFORM_*`): the guest programs the
//! 8259 pair, the 8254 and its local APIC as an OS does (ports for the first two,
//! ordinary `mov`s to the xAPIC page at [`LAPIC_BASE`] for the last, which the
//! hypervisor traps and decodes), enables interrupts, waits, EOIs each interrupt in its
//! handlers and reports what arrived.

use super::{report, say, Channel};
use core::arch::{asm, naked_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use guest::{check, scenario, BootInfo, LAPIC_BASE, LAPIC_COUNT, LAPIC_TIMER_VECTOR};
use guest::{PIC_VECTOR_BASE, PIT_COUNT, PLATFORM_WAIT_MS};

static PIT_TICKS: AtomicU64 = AtomicU64::new(0);
pub(super) static LAPIC_TICKS: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

pub(super) const SVR: u64 = 0xF0;
pub(super) const TPR: u64 = 0x80;
pub(super) const LVT_TIMER: u64 = 0x320;
const LVT_LINT0: u64 = 0x350;
pub(super) const TMICT: u64 = 0x380;
const TMCCT: u64 = 0x390;
pub(super) const TDCR: u64 = 0x3E0;
const MASKED: u32 = 1 << 16;
const PERIODIC: u32 = 1 << 17;
pub(super) const SPURIOUS_VECTOR: u8 = 0xFF;

/// IRQ 0: count, EOI to the master PIC.
#[unsafe(naked)]
extern "C" fn pit_handler() {
    naked_asm!(
        "push rax",
        "lock inc qword ptr [rip + {ticks}]",
        "mov al, 0x20",
        "out 0x20, al",
        "pop rax",
        "iretq",
        ticks = sym PIT_TICKS,
    )
}

/// The APIC timer: count, EOI to the local APIC (a `mov` to its trapped page).
#[unsafe(naked)]
pub(super) extern "C" fn lapic_handler() {
    naked_asm!(
        "push rax",
        "lock inc qword ptr [rip + {ticks}]",
        "mov eax, {eoi}",
        "mov dword ptr [rax], 0",
        "pop rax",
        "iretq",
        ticks = sym LAPIC_TICKS,
        eoi = const LAPIC_BASE + 0xB0,
    )
}

/// PIC IRQ 7 and the APIC's spurious vector: counted, no EOI.
#[unsafe(naked)]
pub(super) extern "C" fn spurious_handler() {
    naked_asm!("lock inc qword ptr [rip + {n}]", "iretq", n = sym SPURIOUS)
}

fn outb(port: u16, v: u8) {
    // SAFETY: port I/O exits to the hypervisor, which emulates the PIC and PIT ports.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

pub(super) fn apic_write(reg: u64, v: u32) {
    // SAFETY: the APIC page is inside the identity map; the access faults in the nested
    // tables and the hypervisor emulates it.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + reg) as *mut u32, v) };
}

fn apic_read(reg: u64) -> u32 {
    // SAFETY: as for `apic_write`.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + reg) as *const u32) }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter (not intercepted).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// ICW1-4 for both chips (master at [`PIC_VECTOR_BASE`], slave 8 above, cascade on IRQ
/// 2), then the masks.
fn init_pic(master_mask: u8) {
    for (port, v) in [(0x20, 0x11), (0x21, PIC_VECTOR_BASE), (0x21, 0x04), (0x21, 0x01)] {
        outb(port, v);
    }
    for (port, v) in [(0xA0, 0x11), (0xA1, PIC_VECTOR_BASE + 8), (0xA1, 0x02), (0xA1, 0x01)] {
        outb(port, v);
    }
    outb(0x21, master_mask);
    outb(0xA1, 0xFF);
}

/// Runs the scenario; returns the status for DONE (0 when it saw what it should).
pub fn run(ch: Channel, info: &BootInfo) -> u64 {
    let masked = info.scenario == scenario::PLATFORM_MASKED;
    let spin = masked || info.scenario == scenario::PLATFORM_SPIN;
    super::idt::load(&[
        (PIC_VECTOR_BASE, pit_handler),
        (PIC_VECTOR_BASE + 7, spurious_handler),
        (LAPIC_TIMER_VECTOR, lapic_handler),
        (SPURIOUS_VECTOR, spurious_handler),
    ]);
    if info.scenario == scenario::PLATFORM_IDLE {
        say(ch, "halting with interrupts on and no timer");
        loop {
            // SAFETY: every vector the platform can raise has a gate; none will come.
            unsafe { asm!("sti", "hlt", options(nomem, nostack)) };
        }
    }
    if info.scenario == scenario::PLATFORM_HOSTILE {
        hostile();
        return 0;
    }
    init_pic(if masked { 0xFF } else { 0xFE });
    let imr = u64::from(inb(0x21)) | u64::from(inb(0xA1)) << 8;
    report(ch, check::PIC_IMR, imr);
    // PIT channel 0: lobyte/hibyte, mode 2 (rate generator).
    outb(0x43, 0x34);
    outb(0x40, PIT_COUNT as u8);
    outb(0x40, (PIT_COUNT >> 8) as u8);
    apic_write(SVR, 0x100 | u32::from(SPURIOUS_VECTOR));
    apic_write(TPR, 0);
    apic_write(LVT_LINT0, 0x700);
    if info.scenario == scenario::PLATFORM_UNDECODABLE {
        say(ch, "incrementing the APIC's TPR in place (an access no decoder of mov emulates)");
        // SAFETY: deliberately an access the hypervisor refuses; it stops the guest.
        unsafe {
            asm!("inc dword ptr [{}]", in(reg) LAPIC_BASE + TPR, options(nostack));
        }
        return 1;
    }
    // One-shot, masked, divide by 16, the largest count: the current count falls.
    apic_write(TDCR, 0x3);
    apic_write(LVT_TIMER, MASKED | u32::from(LAPIC_TIMER_VECTOR));
    apic_write(TMICT, u32::MAX);
    let first = apic_read(TMCCT);
    for _ in 0..1000 {
        core::hint::spin_loop();
    }
    let second = apic_read(TMCCT);
    report(ch, check::TMCCT_FIRST, u64::from(first));
    report(ch, check::TMCCT_SECOND, u64::from(second));
    // Periodic at its own vector (masked in the control).
    let lvt = PERIODIC | u32::from(LAPIC_TIMER_VECTOR) | if masked { MASKED } else { 0 };
    apic_write(LVT_TIMER, lvt);
    apic_write(TMICT, LAPIC_COUNT);
    let hz = if info.tsc_hz == 0 { 1 << 31 } else { info.tsc_hz };
    let span = hz / 1000 * PLATFORM_WAIT_MS;
    let start = rdtsc();
    // SAFETY: every vector the platform can raise has a gate.
    unsafe { asm!("sti", options(nomem, nostack)) };
    while rdtsc().wrapping_sub(start) < span {
        if spin {
            // Interruptible, but never exiting by itself (and nothing may wake a halt in
            // the masked control).
            core::hint::spin_loop();
        } else {
            // SAFETY: HLT with interrupts on waits for the next one.
            unsafe { asm!("hlt", options(nomem, nostack)) };
        }
    }
    // SAFETY: masking interrupts has no memory effect.
    unsafe { asm!("cli", options(nomem, nostack)) };
    let waited = rdtsc().wrapping_sub(start);
    apic_write(TMICT, 0);
    outb(0x21, 0xFF);
    let pit = PIT_TICKS.load(Ordering::Relaxed);
    let lapic = LAPIC_TICKS.load(Ordering::Relaxed);
    let spurious = SPURIOUS.load(Ordering::Relaxed);
    report(ch, check::PIT_TICKS, pit);
    report(ch, check::LAPIC_TICKS, lapic);
    report(ch, check::WAIT_CYCLES, waited);
    report(ch, check::SPURIOUS, spurious);
    let falling = second < first;
    let arrived = pit != 0 && lapic != 0;
    (!falling || arrived == masked || spurious != 0) as u64
}

/// Random traffic, interrupts off: every platform port (IN and OUT of random bytes) and
/// every local APIC register (random 8-, 16- and 32-bit reads and writes).
fn hostile() {
    const PORTS: [u16; 11] = [0x20, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x40, 0x41, 0x42, 0x43, 0x61];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..guest::PLATFORM_HOSTILE_ACCESSES {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = PORTS[(x % PORTS.len() as u64) as usize];
        if x & 1 << 8 != 0 {
            outb(port, (x >> 16) as u8);
        } else {
            let _ = inb(port);
        }
        let addr = LAPIC_BASE + ((x >> 24) & 0xFFF);
        // SAFETY: addresses in the APIC page (identity-mapped, trapped and emulated);
        // each access is an ordinary mov of its size, naturally aligned.
        unsafe {
            match (x >> 40) & 7 {
                0 => core::ptr::write_volatile((addr & !3) as *mut u32, (x >> 8) as u32),
                1 => core::ptr::write_volatile((addr & !1) as *mut u16, (x >> 8) as u16),
                2 => core::ptr::write_volatile(addr as *mut u8, (x >> 8) as u8),
                3 => {
                    let _ = core::ptr::read_volatile((addr & !1) as *const u16);
                }
                4 => {
                    let _ = core::ptr::read_volatile(addr as *const u8);
                }
                _ => {
                    let _ = core::ptr::read_volatile((addr & !3) as *const u32);
                }
            }
        }
    }
}
