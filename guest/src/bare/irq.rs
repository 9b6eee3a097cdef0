//! The guest's device interrupts, the way an OS sets them up: a GDT and an IDT with a
//! handler at [`IRQ_VECTOR`], the device's MSI capability found and programmed through
//! configuration mechanism #1 (ports 0xCF8/0xCFC, which the hypervisor emulates), then
//! [`IRQ_DMAS`] DMAs that each ask edu for a completion interrupt, counted by the handler.

use super::{read32, read64, report, say, write32, write64, Channel};
use core::arch::{asm, naked_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use guest::{check, IRQ_DMAS, IRQ_VECTOR};

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
/// edu registers: DMA source, destination, count, command; interrupt acknowledge.
const SRC: u64 = 0x80;
const DST: u64 = 0x88;
const COUNT: u64 = 0x90;
const CMD: u64 = 0x98;
const ACK: u64 = 0x64;
const STATUS: u64 = 0x24;
/// edu command: start, and raise an interrupt when done; its status bit for DMA.
const CMD_START_IRQ: u64 = 1 | 4;
const DMA_DONE: u32 = 0x100;
const BUFFER: u64 = 0x40000;
const POLLS: u32 = 20_000_000;

static TAKEN: AtomicU64 = AtomicU64::new(0);

/// Set when the partition has the emulated platform: device interrupts then arrive
/// through its local APIC, which needs an EOI.
pub static APIC_EOI: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// Counts the interrupt and returns (no device acknowledgement: the device is
/// acknowledged after the wait); with the platform, an EOI to the local APIC first.
#[unsafe(naked)]
extern "C" fn handler() {
    naked_asm!(
        "cmp byte ptr [rip + {eoi}], 0",
        "je 2f",
        "push rax",
        "mov eax, {apic_eoi}",
        "mov dword ptr [rax], 0",
        "pop rax",
        "2:",
        "lock inc qword ptr [rip + {taken}]",
        "iretq",
        taken = sym TAKEN,
        eoi = sym APIC_EOI,
        apic_eoi = const guest::LAPIC_BASE + 0xB0,
    )
}

fn config_read(offset: u8) -> u32 {
    let value: u32;
    // SAFETY: port I/O to the configuration ports exits to the hypervisor, which emulates
    // them; no memory is touched.
    unsafe {
        asm!("out dx, eax", in("dx") CONFIG_ADDRESS, in("eax") 0x8000_0000u32 | u32::from(offset & 0xFC), options(nomem, nostack));
        asm!("in eax, dx", in("dx") CONFIG_DATA, out("eax") value, options(nomem, nostack));
    }
    value
}

fn config_write(offset: u8, value: u32) {
    // SAFETY: as for `config_read`.
    unsafe {
        asm!("out dx, eax", in("dx") CONFIG_ADDRESS, in("eax") 0x8000_0000u32 | u32::from(offset & 0xFC), options(nomem, nostack));
        asm!("out dx, eax", in("dx") CONFIG_DATA, in("eax") value, options(nomem, nostack));
    }
}

/// Programs MSI through the configuration space and counts completion interrupts.
/// Returns 0 when every DMA's interrupt arrived.
pub fn run(ch: Channel, bar: u64) -> u64 {
    let id = config_read(0x00);
    report(ch, check::CONFIG_ID, u64::from(id));
    if id == u32::MAX {
        say(ch, "no device in the configuration space: no device interrupts");
        return 0;
    }
    let cap = (config_read(0x34) & 0xFC) as u8;
    if cap < 0x40 || config_read(cap) & 0xFF != 0x05 {
        say(ch, "no MSI capability in the device's configuration space");
        return 1;
    }
    config_write(cap + 4, 0xFEE0_0000);
    config_write(cap + 8, 0);
    config_write(cap + 12, u32::from(IRQ_VECTOR));
    config_write(cap, config_read(cap) | 1 << 16);
    report(ch, check::IRQ_VECTOR, u64::from(IRQ_VECTOR));
    super::idt::load(&[(IRQ_VECTOR, handler)]);
    if APIC_EOI.load(Ordering::Relaxed) != 0 {
        // With the platform, an MSI reaches a software-enabled local APIC only: enable it
        // (SVR bit 8, spurious vector 0xFF) with a `mov` to its trapped page.
        // SAFETY: the APIC page is in the identity map; the hypervisor emulates the access.
        unsafe { core::ptr::write_volatile((guest::LAPIC_BASE + 0xF0) as *mut u32, 0x1FF) };
    }
    // SAFETY: the IDT has a gate for the only vector the hypervisor injects.
    unsafe { asm!("sti", options(nomem, nostack)) };
    for _ in 0..IRQ_DMAS {
        let before = TAKEN.load(Ordering::Relaxed);
        write64(bar + SRC, guest::DMA_SOURCE);
        write64(bar + DST, BUFFER);
        write64(bar + COUNT, 8);
        write64(bar + CMD, CMD_START_IRQ);
        // Each poll reads the device (an MMIO access takes real time, so the bound is one
        // of time, not of a fast memory loop): first the DMA's end, then the interrupt.
        let done = (0..POLLS).any(|_| read64(bar + CMD) & 1 == 0);
        let arrived = done
            && (0..POLLS).any(|_| {
                read32(bar + STATUS) == u32::MAX || TAKEN.load(Ordering::Relaxed) != before
            });
        write32(bar + ACK, DMA_DONE);
        if !arrived {
            break;
        }
    }
    // SAFETY: masking interrupts has no memory effect.
    unsafe { asm!("cli", options(nomem, nostack)) };
    config_write(cap, config_read(cap) & !(1 << 16));
    let taken = TAKEN.load(Ordering::Relaxed);
    report(ch, check::IRQ_COUNT, taken);
    (taken != IRQ_DMAS) as u64
}
