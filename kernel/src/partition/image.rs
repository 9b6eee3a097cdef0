//! Loading a guest: its ELF image's PT_LOAD segments, the identity page tables it starts
//! with (0-4 GiB, 2 MiB pages, in guest memory at [`guest::PAGE_TABLES`]) and its boot page.
#![deny(unsafe_code)]

use super::memory::GuestMemory;

pub use boot::guest_elf::ImageError;

/// Copies the PT_LOAD segments of `elf` into `mem` (the rest stays zero) and returns the
/// entry point. The parsing (every offset and address checked: the image is untrusted
/// input) is `boot::guest_elf::load`; segments must lie in
/// `[guest::LOAD_ADDRESS, guest::DMA_SOURCE)`.
pub fn load_elf(elf: &[u8], mem: &mut GuestMemory) -> Result<u64, ImageError> {
    boot::guest_elf::load(elf, guest::LOAD_ADDRESS, guest::DMA_SOURCE, &mut |addr, bytes| {
        mem.write(addr, bytes)
    })
}

/// Writes the guest's page tables: PML4 -> one PDPT -> four PDs of 2 MiB pages mapping
/// guest-virtual = guest-physical over 0-4 GiB (RAM and device windows alike; the nested
/// tables decide what is really there).
pub fn build_identity_map(mem: &mut GuestMemory) -> bool {
    const P_RW: u64 = 0x3;
    const PS: u64 = 1 << 7;
    let pml4 = guest::PAGE_TABLES;
    let pdpt = pml4 + 0x1000;
    let pd0 = pdpt + 0x1000;
    let mut ok = mem.write(pml4, &(pdpt | P_RW).to_le_bytes());
    for g in 0..4u64 {
        let pd = pd0 + g * 0x1000;
        ok &= mem.write(pdpt + g * 8, &(pd | P_RW).to_le_bytes());
        for e in 0..512u64 {
            let base = (g << 30) | (e << 21);
            ok &= mem.write(pd + e * 8, &(base | P_RW | PS).to_le_bytes());
        }
    }
    ok
}

/// Writes the boot page at [`guest::BOOT_INFO`].
pub fn write_boot_info(mem: &mut GuestMemory, info: &guest::BootInfo) -> bool {
    let words = [
        info.magic,
        info.memory_size,
        info.scenario,
        info.edu_bar,
        info.edu_bar_size,
        info.dma_allowed,
        info.dma_outside,
        info.dma_foreign,
        info.dma_hypervisor,
        info.device_id,
        info.tsc_hz,
        info.platform,
    ];
    const _: () = assert!(core::mem::size_of::<guest::BootInfo>() == 12 * 8);
    words
        .iter()
        .enumerate()
        .all(|(i, w)| mem.write(guest::BOOT_INFO + i as u64 * 8, &w.to_le_bytes()))
}
