//! Multiboot1 information structure (QEMU `-kernel`).

use crate::info::{le32, le64, read_cstr, BootError, BootInfo, MemoryKind, PhysReader, Protocol};

const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODS: u32 = 1 << 3;
const FLAG_MMAP: u32 = 1 << 6;

/// Maps a Multiboot1 / E820 memory type to ours.
pub(crate) fn e820_kind(t: u32) -> MemoryKind {
    match t {
        1 => MemoryKind::Usable,
        3 => MemoryKind::AcpiReclaimable,
        4 => MemoryKind::AcpiNvs,
        5 => MemoryKind::Bad,
        _ => MemoryKind::Reserved,
    }
}

pub(crate) fn parse(info: u64, mem: &dyn PhysReader) -> Result<BootInfo, BootError> {
    let bad = |what| BootError::BadPointer { what, addr: info };
    let mbi = mem.read(info, 52).ok_or(bad("Multiboot1 information"))?;
    let field = |off| le32(mbi, off).ok_or(BootError::Malformed("Multiboot1 information"));
    let flags = field(0)?;
    let mut bi = BootInfo::new(Protocol::Multiboot1);
    if flags & FLAG_CMDLINE != 0 {
        // QEMU and GRUB put the image's own path first; it is not a switch.
        // Up to the whole string buffer: a long `test=` list plus the path must fit.
        let line = read_cstr(mem, field(16)? as u64, crate::info::STRINGS);
        let first_end = line.iter().position(|&c| c == b' ').unwrap_or(line.len());
        let line = if line[..first_end].contains(&b'=') { line } else { &line[first_end..] };
        let skip = line.iter().take_while(|&&c| c == b' ').count();
        bi.set_cmdline(&line[skip..]);
    }
    if flags & FLAG_MODS != 0 {
        let (count, addr) = (field(20)? as usize, field(24)? as u64);
        for i in 0..count.min(crate::info::MAX_MODULES) {
            let at = addr.checked_add(16 * i as u64).ok_or(BootError::Malformed("module list"))?;
            let m = mem.read(at, 16).ok_or(BootError::BadPointer { what: "module", addr: at })?;
            let (start, end, name) = (le32(m, 0), le32(m, 4), le32(m, 8));
            let (Some(start), Some(end), Some(name)) = (start, end, name) else {
                return Err(BootError::Malformed("module entry"));
            };
            let name = read_cstr(mem, name as u64, 256);
            bi.push_module(start as u64, end as u64, name);
        }
    }
    if flags & FLAG_MMAP != 0 {
        let (len, addr) = (field(44)? as usize, field(48)? as u64);
        let map = mem.read(addr, len).ok_or(BootError::BadPointer { what: "memory map", addr })?;
        let mut off = 0usize;
        while off.checked_add(24).is_some_and(|end| end <= map.len()) {
            let size = le32(map, off).unwrap_or(0) as usize;
            if size < 20 {
                return Err(BootError::Malformed("memory map entry size below 20"));
            }
            let (Some(base), Some(length), Some(kind)) =
                (le64(map, off + 4), le64(map, off + 12), le32(map, off + 20))
            else {
                break;
            };
            bi.push_region(base, length, e820_kind(kind));
            off = off.saturating_add(size.saturating_add(4));
        }
    }
    Ok(bi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::FakeMemory;

    #[test]
    fn reads_cmdline_mmap_and_modules() {
        let mut m = FakeMemory::new(0x10000);
        m.put_str(0x2000, "/boot/kernel test=all log=debug");
        m.put_str(0x2100, "partitions.cfg");
        // module: start 0x8000, end 0x8010, name
        m.put32(0x3000, 0x8000);
        m.put32(0x3004, 0x8010);
        m.put32(0x3008, 0x2100);
        // memory map: two entries, deliberately out of order
        let e = 0x4000;
        for (i, (base, len, t)) in
            [(0x100000u64, 0x7ff0_0000u64, 1u32), (0, 0x9fc00, 1)].iter().enumerate()
        {
            let at = e + 24 * i as u64;
            m.put32(at, 20);
            m.put64(at + 4, *base);
            m.put64(at + 12, *len);
            m.put32(at + 20, *t);
        }
        m.put32(0x1000, FLAG_CMDLINE | FLAG_MODS | FLAG_MMAP);
        m.put32(0x1000 + 16, 0x2000);
        m.put32(0x1000 + 20, 1);
        m.put32(0x1000 + 24, 0x3000);
        m.put32(0x1000 + 44, 48);
        m.put32(0x1000 + 48, e as u32);
        let bi = BootInfo::parse(crate::MULTIBOOT1_MAGIC, 0x1000, &m).unwrap();
        assert_eq!(bi.protocol, Protocol::Multiboot1);
        assert_eq!(bi.cmdline(), "test=all log=debug");
        assert_eq!(bi.memory_map().len(), 2);
        assert_eq!(bi.memory_map()[0].start, 0);
        assert_eq!(bi.memory_map()[1].start, 0x100000);
        assert_eq!(bi.usable_bytes(), 0x9fc00 + 0x7ff0_0000);
        assert_eq!(bi.modules().len(), 1);
        assert_eq!(bi.string(bi.modules()[0].name), "partitions.cfg");
        assert_eq!(bi.rsdp, None);
    }

    #[test]
    fn pointer_outside_memory_is_an_error_not_a_panic() {
        let mut m = FakeMemory::new(0x2000);
        m.put32(0x1000, FLAG_MMAP);
        m.put32(0x1000 + 44, 0xffff);
        m.put32(0x1000 + 48, 0xffff_0000);
        assert!(matches!(
            BootInfo::parse(crate::MULTIBOOT1_MAGIC, 0x1000, &m),
            Err(BootError::BadPointer { .. })
        ));
        assert!(BootInfo::parse(crate::MULTIBOOT1_MAGIC, 0x1ff0, &m).is_err());
    }
}
