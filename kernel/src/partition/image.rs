//! Loading a guest: its ELF image's PT_LOAD segments, the identity page tables it starts
//! with (0-4 GiB, 2 MiB pages, in guest memory at [`guest::PAGE_TABLES`]) and its boot page.

use super::memory::GuestMemory;
use core::fmt;

/// Why a guest image cannot be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// Empty (the kernel was built without the guest: use `cargo xtask build`).
    Missing,
    /// Not a little-endian x86-64 ELF64 executable.
    NotElf,
    /// A header or segment points outside the file.
    Truncated,
    /// A segment outside `[LOAD_ADDRESS, DMA_SOURCE)`, or the entry outside the image.
    BadLayout(u64),
    /// The partition's memory is too small for the segment.
    TooBig(u64),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Missing => f.write_str(
                "no guest image (the kernel was built without GUEST_ELF: build with `cargo xtask build`)",
            ),
            ImageError::NotElf => f.write_str("guest image is not an x86-64 ELF64 executable"),
            ImageError::Truncated => f.write_str("guest image is truncated"),
            ImageError::BadLayout(a) => write!(
                f,
                "guest image uses {a:#x}, outside its load area {:#x}-{:#x}",
                guest::LOAD_ADDRESS,
                guest::DMA_SOURCE
            ),
            ImageError::TooBig(a) => write!(f, "guest segment at {a:#x} does not fit in memory"),
        }
    }
}

/// `N` bytes of `b` at `o + add`; `None` past the end or when the offset overflows
/// (offsets come from the image, which is untrusted).
fn bytes_at<const N: usize>(b: &[u8], o: usize, add: usize) -> Option<[u8; N]> {
    let start = o.checked_add(add)?;
    b.get(start..start.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    bytes_at(b, o, 0).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    bytes_at(b, o, 0).map(u32::from_le_bytes)
}

/// The 64-bit field at `o + field`.
fn u64_field(b: &[u8], o: usize, field: usize) -> Option<u64> {
    bytes_at(b, o, field).map(u64::from_le_bytes)
}

/// Copies the PT_LOAD segments of `elf` into `mem` (the rest stays zero) and returns the
/// entry point. Every offset and address is checked: the image is untrusted input.
pub fn load_elf(elf: &[u8], mem: &mut GuestMemory) -> Result<u64, ImageError> {
    if elf.is_empty() {
        return Err(ImageError::Missing);
    }
    if elf.get(0..4) != Some(b"\x7fELF".as_slice())
        || elf.get(4) != Some(&2)
        || elf.get(5) != Some(&1)
        || u16_at(elf, 18) != Some(0x3E)
    {
        return Err(ImageError::NotElf);
    }
    let t = ImageError::Truncated;
    let entry = u64_field(elf, 0, 24).ok_or(t)?;
    let phoff = usize::try_from(u64_field(elf, 0, 32).ok_or(t)?).map_err(|_| t)?;
    let phentsize = u16_at(elf, 54).ok_or(t)? as usize;
    let phnum = u16_at(elf, 56).ok_or(t)? as usize;
    let (lo, hi) = (guest::LOAD_ADDRESS, guest::DMA_SOURCE);
    let mut entry_loaded = false;
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize).ok_or(t)?).ok_or(t)?;
        if u32_at(elf, ph).ok_or(t)? != 1 {
            continue; // not PT_LOAD
        }
        let offset = usize::try_from(u64_field(elf, ph, 8).ok_or(t)?).map_err(|_| t)?;
        let addr = u64_field(elf, ph, 24).ok_or(t)?; // p_paddr: identity-mapped guest
        let filesz = usize::try_from(u64_field(elf, ph, 32).ok_or(t)?).map_err(|_| t)?;
        let memsz = u64_field(elf, ph, 40).ok_or(t)?;
        let end = addr.checked_add(memsz).ok_or(ImageError::BadLayout(addr))?;
        if addr < lo || end > hi || (filesz as u64) > memsz {
            return Err(ImageError::BadLayout(addr));
        }
        let bytes = elf.get(offset..offset.checked_add(filesz).ok_or(t)?).ok_or(t)?;
        if !mem.write(addr, bytes) {
            return Err(ImageError::TooBig(addr));
        }
        entry_loaded |= (addr..end).contains(&entry);
    }
    if !entry_loaded {
        return Err(ImageError::BadLayout(entry));
    }
    Ok(entry)
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
    ];
    const _: () = assert!(core::mem::size_of::<guest::BootInfo>() == 10 * 8);
    words
        .iter()
        .enumerate()
        .all(|(i, w)| mem.write(guest::BOOT_INFO + i as u64 * 8, &w.to_le_bytes()))
}
