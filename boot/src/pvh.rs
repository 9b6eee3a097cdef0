//! Xen PVH `hvm_start_info` (QEMU `-kernel` of an ELF with the PVH note).

use crate::info::{le32, le64, read_cstr, BootError, BootInfo, PhysReader, Protocol, Rsdp};
use crate::multiboot1::e820_kind;

pub(crate) fn parse(info: u64, mem: &dyn PhysReader) -> Result<BootInfo, BootError> {
    let si =
        mem.read(info, 56).ok_or(BootError::BadPointer { what: "PVH start info", addr: info })?;
    if le32(si, 0) != Some(crate::PVH_MAGIC) {
        return Err(BootError::Malformed("PVH start info magic"));
    }
    let field64 = |off| le64(si, off).unwrap_or(0);
    let version = le32(si, 4).unwrap_or(0);
    let mut bi = BootInfo::new(Protocol::Pvh);
    let cmdline = field64(24);
    if cmdline != 0 {
        bi.set_cmdline(read_cstr(mem, cmdline, 512));
    }
    let rsdp = field64(32);
    if rsdp != 0 {
        bi.rsdp = Some(Rsdp::Address(rsdp));
    }
    let (nr_mods, modlist) = (le32(si, 12).unwrap_or(0) as usize, field64(16));
    for i in 0..nr_mods.min(crate::info::MAX_MODULES) {
        // `modlist` comes from the loader: an entry past the end of the address space
        // is a malformed structure, not an arithmetic overflow.
        let at = (32 * i as u64)
            .checked_add(modlist)
            .ok_or(BootError::Malformed("PVH module list runs past the address space"))?;
        let m = mem.read(at, 32).ok_or(BootError::BadPointer { what: "PVH module", addr: at })?;
        let (paddr, size, name) = (le64(m, 0).unwrap_or(0), le64(m, 8).unwrap_or(0), le64(m, 16));
        let name = match name {
            Some(0) | None => &[][..],
            Some(a) => read_cstr(mem, a, 256),
        };
        bi.push_module(paddr, paddr.saturating_add(size), name);
    }
    if version >= 1 {
        let (map, entries) = (field64(40), le32(si, 48).unwrap_or(0) as usize);
        let bytes = entries.checked_mul(24).filter(|&b| b <= 1 << 20);
        let table = bytes
            .and_then(|b| mem.read(map, b))
            .ok_or(BootError::BadPointer { what: "PVH memory map", addr: map })?;
        for e in table.chunks_exact(24) {
            let (base, len) = (le64(e, 0).unwrap_or(0), le64(e, 8).unwrap_or(0));
            bi.push_region(base, len, e820_kind(le32(e, 16).unwrap_or(0)));
        }
    }
    Ok(bi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::FakeMemory;

    #[test]
    fn reads_start_info() {
        let mut m = FakeMemory::new(0x4000);
        m.put32(0x1000, crate::PVH_MAGIC);
        m.put32(0x1004, 1);
        m.put64(0x1000 + 24, 0x2000);
        m.put_str(0x2000, "test=pvh");
        m.put64(0x1000 + 32, 0xf5a40);
        m.put64(0x1000 + 40, 0x3000);
        m.put32(0x1000 + 48, 2);
        m.put64(0x3000, 0);
        m.put64(0x3008, 0x9fc00);
        m.put32(0x3010, 1);
        m.put64(0x3018, 0x100000);
        m.put64(0x3020, 0x1000_0000);
        m.put32(0x3028, 1);
        let bi = BootInfo::parse(crate::PVH_MAGIC, 0x1000, &m).unwrap();
        assert_eq!(bi.protocol, Protocol::Pvh);
        assert_eq!(bi.cmdline(), "test=pvh");
        assert_eq!(bi.rsdp, Some(Rsdp::Address(0xf5a40)));
        assert_eq!(bi.memory_map().len(), 2);
    }

    #[test]
    fn module_list_at_the_top_of_the_address_space_is_malformed() {
        /// Start info at 0x1000; every other address reads as zeros, so the first
        /// module entry (at the top of the address space) is readable.
        struct ZerosElsewhere(FakeMemory);
        impl PhysReader for ZerosElsewhere {
            fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
                static ZEROS: [u8; 64] = [0; 64];
                self.0.read(addr, len).or_else(|| ZEROS.get(..len))
            }
        }
        let mut m = FakeMemory::new(0x2000);
        m.put32(0x1000, crate::PVH_MAGIC);
        m.put32(0x1000 + 12, 2); // two modules: the second entry's address wraps
        m.put64(0x1000 + 16, u64::MAX - 31);
        let m = ZerosElsewhere(m);
        let r = BootInfo::parse(crate::PVH_MAGIC, 0x1000, &m);
        assert!(matches!(r, Err(BootError::Malformed(_))), "{:?}", r.err());
    }

    #[test]
    fn wrong_magic_or_huge_map_is_rejected() {
        let mut m = FakeMemory::new(0x2000);
        m.put32(0x1000, 0x1234);
        assert!(BootInfo::parse(crate::PVH_MAGIC, 0x1000, &m).is_err());
        m.put32(0x1000, crate::PVH_MAGIC);
        m.put32(0x1004, 1);
        m.put32(0x1000 + 48, u32::MAX);
        assert!(BootInfo::parse(crate::PVH_MAGIC, 0x1000, &m).is_err());
    }
}
