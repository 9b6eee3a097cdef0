//! Fuzzes the boot-information parsers (Multiboot1, Multiboot2, PVH): the first byte
//! picks the protocol, the rest is physical memory from 0x1000, where the info pointer
//! points (the next four bytes move it within that memory).
#![no_main]

use boot::{BootInfo, PhysReader, MULTIBOOT1_MAGIC, MULTIBOOT2_MAGIC, PVH_MAGIC};
use libfuzzer_sys::fuzz_target;

const BASE: u64 = 0x1000;

struct Memory<'a>(&'a [u8]);

impl PhysReader for Memory<'_> {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(BASE)?).ok()?;
        self.0.get(start..start.checked_add(len)?)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let magic = [MULTIBOOT1_MAGIC, MULTIBOOT2_MAGIC, PVH_MAGIC, which as u32][which as usize % 4];
    let (offset, memory) = match rest.split_first_chunk::<4>() {
        Some((o, m)) => (u32::from_le_bytes(*o) as u64 % 64, m),
        None => (0, rest),
    };
    let Ok(info) = BootInfo::parse(magic, BASE + offset, &Memory(memory)) else {
        return;
    };
    assert!(!info.memory_map().is_empty());
    for w in info.memory_map().windows(2) {
        assert!(w[0].start <= w[1].start, "memory map not sorted");
    }
    let _ = info.cmdline();
    for m in info.modules() {
        let _ = info.string(m.name);
    }
    let _ = info.usable_bytes();
});
