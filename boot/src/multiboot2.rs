//! Multiboot2 information structure (GRUB, BIOS or UEFI).

use crate::info::{le32, le64, BootError, BootInfo, PhysReader, Protocol, Rsdp};
use crate::multiboot1::e820_kind;

const TAG_END: u32 = 0;
const TAG_CMDLINE: u32 = 1;
const TAG_MODULE: u32 = 3;
const TAG_MMAP: u32 = 6;
const TAG_ACPI_OLD: u32 = 14;
const TAG_ACPI_NEW: u32 = 15;

/// Upper bound on the information structure we accept (GRUB's is a few KiB).
const MAX_TOTAL: usize = 1 << 20;

pub(crate) fn parse(info: u64, mem: &dyn PhysReader) -> Result<BootInfo, BootError> {
    let head = mem
        .read(info, 8)
        .ok_or(BootError::BadPointer { what: "Multiboot2 information", addr: info })?;
    let total = le32(head, 0).unwrap_or(0) as usize;
    if !(16..=MAX_TOTAL).contains(&total) {
        return Err(BootError::Malformed("Multiboot2 total size"));
    }
    let mbi = mem
        .read(info, total)
        .ok_or(BootError::BadPointer { what: "Multiboot2 information", addr: info })?;
    let mut bi = BootInfo::new(Protocol::Multiboot2);
    let mut off = 8usize;
    let mut new_rsdp = false;
    while off.checked_add(8).is_some_and(|end| end <= total) {
        let kind = le32(mbi, off).unwrap_or(TAG_END);
        let size = le32(mbi, off + 4).unwrap_or(0) as usize;
        if kind == TAG_END {
            break;
        }
        let Some(tag) = mbi.get(off..off.saturating_add(size)).filter(|_| size >= 8) else {
            return Err(BootError::Malformed("Multiboot2 tag runs past the end"));
        };
        match kind {
            TAG_CMDLINE => bi.set_cmdline(&tag[8..]),
            TAG_MODULE if size >= 16 => {
                let start = le32(tag, 8).unwrap_or(0) as u64;
                let end = le32(tag, 12).unwrap_or(0) as u64;
                bi.push_module(start, end, &tag[16..]);
            }
            TAG_MMAP if size >= 16 => {
                let entry = le32(tag, 8).unwrap_or(0) as usize;
                if entry < 24 {
                    return Err(BootError::Malformed("Multiboot2 memory map entry size"));
                }
                let mut e = 16usize;
                while e.checked_add(entry).is_some_and(|end| end <= size) {
                    let (Some(base), Some(len), Some(t)) =
                        (le64(tag, e), le64(tag, e + 8), le32(tag, e + 16))
                    else {
                        break;
                    };
                    bi.push_region(base, len, e820_kind(t));
                    e += entry;
                }
            }
            // Prefer the ACPI 2.0+ RSDP (XSDT) when both tags are present.
            TAG_ACPI_OLD | TAG_ACPI_NEW if size > 8 && !new_rsdp => {
                let mut copy = [0u8; 36];
                let body = &tag[8..];
                let n = body.len().min(36);
                copy[..n].copy_from_slice(&body[..n]);
                bi.rsdp = Some(Rsdp::Copy(copy));
                new_rsdp = kind == TAG_ACPI_NEW;
            }
            _ => {}
        }
        off = off.saturating_add(size.saturating_add(7) & !7);
    }
    Ok(bi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::FakeMemory;

    fn tag(m: &mut FakeMemory, at: &mut u64, kind: u32, body: &[u8]) {
        m.put32(*at, kind);
        m.put32(*at + 4, 8 + body.len() as u32);
        m.put_bytes(*at + 8, body);
        *at += ((8 + body.len() as u64) + 7) & !7;
    }

    #[test]
    fn reads_tags_and_prefers_new_rsdp() {
        let mut m = FakeMemory::new(0x4000);
        let base = 0x1000u64;
        let mut at = base + 8;
        tag(&mut m, &mut at, TAG_CMDLINE, b"test=boot\0");
        let mut mmap = vec![];
        mmap.extend_from_slice(&24u32.to_le_bytes());
        mmap.extend_from_slice(&0u32.to_le_bytes());
        for (b, l, t) in
            [(0u64, 0x9f000u64, 1u32), (0x100000, 0x3ff0_0000, 1), (0xfec0_0000, 0x1000, 2)]
        {
            mmap.extend_from_slice(&b.to_le_bytes());
            mmap.extend_from_slice(&l.to_le_bytes());
            mmap.extend_from_slice(&t.to_le_bytes());
            mmap.extend_from_slice(&0u32.to_le_bytes());
        }
        tag(&mut m, &mut at, TAG_MMAP, &mmap);
        let mut new = *b"RSD PTR \0\0\0\0\0\0\0\x02";
        new[0] = b'R';
        tag(&mut m, &mut at, TAG_ACPI_NEW, &new);
        tag(&mut m, &mut at, TAG_ACPI_OLD, b"RSD PTR old");
        tag(&mut m, &mut at, TAG_END, &[]);
        m.put32(base, (at - base) as u32);
        let bi = BootInfo::parse(crate::MULTIBOOT2_MAGIC, base, &m).unwrap();
        assert_eq!(bi.cmdline(), "test=boot");
        assert_eq!(bi.memory_map().len(), 3);
        assert_eq!(bi.usable_bytes(), 0x9f000 + 0x3ff0_0000);
        match bi.rsdp {
            Some(Rsdp::Copy(c)) => assert_eq!(c[15], 2),
            other => panic!("unexpected rsdp {other:?}"),
        }
    }

    #[test]
    fn truncated_tag_is_an_error() {
        let mut m = FakeMemory::new(0x2000);
        m.put32(0x1000, 32);
        m.put32(0x1008, TAG_CMDLINE);
        m.put32(0x100c, 4000);
        assert!(BootInfo::parse(crate::MULTIBOOT2_MAGIC, 0x1000, &m).is_err());
        m.put32(0x1000, 0xffff_fff0);
        assert!(BootInfo::parse(crate::MULTIBOOT2_MAGIC, 0x1000, &m).is_err());
    }
}
