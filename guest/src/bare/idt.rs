//! The guest's descriptor tables, loaded the way an OS does before it enables
//! interrupts: a GDT (null, 64-bit code 0x08, data 0x10) and an IDT with the gates asked.

use core::arch::asm;

/// Null, 64-bit code (0x08), data (0x10); accessed bits preset.
static GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

/// Loads the GDT and an IDT with an interrupt gate for each `(vector, handler)`.
pub fn load(gates: &[(u8, extern "C" fn())]) {
    for &(vector, handler) in gates {
        let h = handler as *const () as u64;
        let lo = (h & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | ((h >> 16) & 0xFFFF) << 48;
        let i = 2 * usize::from(vector);
        // SAFETY: the IDT is only written here, before interrupts are enabled.
        unsafe {
            let idt = core::ptr::addr_of_mut!(IDT);
            (*idt).0[i] = lo;
            (*idt).0[i + 1] = h >> 32;
        }
    }
    let gdt = Pointer { limit: (8 * GDT.len() - 1) as u16, base: GDT.as_ptr() as u64 };
    let idt = Pointer { limit: 4095, base: core::ptr::addr_of!(IDT) as u64 };
    // SAFETY: both tables are statics that live for the whole run; the descriptors of the
    // selectors in use (CS 0x08, SS/DS 0x10) are valid 64-bit ones.
    unsafe {
        asm!("lgdt [{}]", in(reg) &gdt, options(readonly, nostack));
        asm!("lidt [{}]", in(reg) &idt, options(readonly, nostack));
    }
}
