//! The guest image format: an x86-64 ELF64 executable whose PT_LOAD segments are copied
//! to their physical addresses. Guest images are boot input (boot modules, or the
//! built-in guest), untrusted: every offset and address is checked, nothing panics, and
//! the parser is host-tested and fuzzed (`boot/fuzz`). The kernel's loader
//! (`kernel/src/partition/image.rs`) supplies where bytes go.

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
    /// A segment outside the load area `[lo, hi)`, or the entry outside every segment.
    BadLayout {
        /// The offending address.
        addr: u64,
        /// The load area's start.
        lo: u64,
        /// Its end.
        hi: u64,
    },
    /// The segment at this address did not fit the partition's memory.
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
            ImageError::BadLayout { addr, lo, hi } => {
                write!(f, "guest image uses {addr:#x}, outside its load area {lo:#x}-{hi:#x}")
            }
            ImageError::TooBig(a) => write!(f, "guest segment at {a:#x} does not fit in memory"),
        }
    }
}

/// `N` bytes of `b` at `o + add`; `None` past the end or when the offset overflows.
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

/// Walks the PT_LOAD segments of `elf`, each of which must lie in `[lo, hi)`, handing
/// each segment's file bytes and physical address to `write` (false: it did not fit,
/// [`ImageError::TooBig`]); the rest of each segment is left as it was (zero in fresh
/// guest memory). Returns the entry point, which must lie inside a loaded segment.
pub fn load(
    elf: &[u8],
    lo: u64,
    hi: u64,
    write: &mut dyn FnMut(u64, &[u8]) -> bool,
) -> Result<u64, ImageError> {
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
    let layout = |addr| ImageError::BadLayout { addr, lo, hi };
    let entry = u64_field(elf, 0, 24).ok_or(t)?;
    let phoff = usize::try_from(u64_field(elf, 0, 32).ok_or(t)?).map_err(|_| t)?;
    let phentsize = u16_at(elf, 54).ok_or(t)? as usize;
    let phnum = u16_at(elf, 56).ok_or(t)? as usize;
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
        let end = addr.checked_add(memsz).ok_or(layout(addr))?;
        if addr < lo || end > hi || (filesz as u64) > memsz {
            return Err(layout(addr));
        }
        let bytes = elf.get(offset..offset.checked_add(filesz).ok_or(t)?).ok_or(t)?;
        if !write(addr, bytes) {
            return Err(ImageError::TooBig(addr));
        }
        entry_loaded |= (addr..end).contains(&entry);
    }
    if !entry_loaded {
        return Err(layout(entry));
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one PT_LOAD of `code` at `addr`, entry `entry`.
    fn elf(addr: u64, entry: u64, code: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; 120];
        e[0..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[18..20].copy_from_slice(&0x3Eu16.to_le_bytes());
        e[24..32].copy_from_slice(&entry.to_le_bytes());
        e[32..40].copy_from_slice(&64u64.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = 64;
        e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
        e[ph + 24..ph + 32].copy_from_slice(&addr.to_le_bytes());
        e[ph + 32..ph + 40].copy_from_slice(&(code.len() as u64).to_le_bytes());
        e[ph + 40..ph + 48].copy_from_slice(&(code.len() as u64).to_le_bytes());
        e.extend_from_slice(code);
        e
    }

    #[test]
    fn loads_segments_and_checks_layout() {
        let mut got = Vec::new();
        let image = elf(0x10_0000, 0x10_0001, &[1, 2, 3]);
        let entry = load(&image, 0x10_0000, 0x20_0000, &mut |a, b| {
            got.push((a, b.to_vec()));
            true
        });
        assert_eq!(entry, Ok(0x10_0001));
        assert_eq!(got, vec![(0x10_0000, vec![1, 2, 3])]);
        let outside = elf(0x20_0000, 0x20_0000, &[1]);
        assert_eq!(
            load(&outside, 0x10_0000, 0x20_0000, &mut |_, _| true),
            Err(ImageError::BadLayout { addr: 0x20_0000, lo: 0x10_0000, hi: 0x20_0000 })
        );
        let bad_entry = elf(0x10_0000, 0x1F_0000, &[1]);
        assert!(matches!(
            load(&bad_entry, 0x10_0000, 0x20_0000, &mut |_, _| true),
            Err(ImageError::BadLayout { addr: 0x1F_0000, .. })
        ));
        assert_eq!(
            load(&image[..100], 0x10_0000, 0x20_0000, &mut |_, _| true),
            Err(ImageError::Truncated)
        );
        assert_eq!(load(&[], 0, 1, &mut |_, _| true), Err(ImageError::Missing));
        assert_eq!(load(b"\x7fELF", 0, 1, &mut |_, _| true), Err(ImageError::NotElf));
        assert_eq!(
            load(&image, 0x10_0000, 0x20_0000, &mut |_, _| false),
            Err(ImageError::TooBig(0x10_0000))
        );
    }
}
