//! Boot protocols and the protocol-independent [`BootInfo`].
//!
//! One 64-bit ELF carries three headers: Multiboot1 with the a.out kludge and a PVH note
//! (both for QEMU's `-kernel`) and Multiboot2 (for GRUB on real machines, BIOS or UEFI).
//! The trampoline in [`entry`] takes each of them from 32-bit protected mode to long mode
//! and calls the kernel's `kernel_main(magic, info)`; [`BootInfo::parse`] then turns the
//! loader's structures into one memory map, RSDP, command line and module list.
#![cfg_attr(not(test), no_std)]
// Parsers of untrusted boot input need no unsafe; only the trampoline's symbols do.
#![deny(unsafe_code)]

pub mod cmdline;
pub mod console;
pub mod guest_elf;
mod info;
pub mod linux_boot;
mod multiboot1;
mod multiboot2;
pub mod partition_config;
mod pvh;

#[cfg(target_os = "none")]
#[allow(unsafe_code)] // declares the assembly trampoline's symbols (`unsafe extern "C"`)
pub mod entry;

pub use info::{
    BootError, BootInfo, MemoryKind, MemoryRegion, Module, PhysReader, Protocol, Rsdp, StrRef,
};
pub use info::{MAX_MODULES, MAX_REGIONS};

/// EAX value a Multiboot1 loader passes.
pub const MULTIBOOT1_MAGIC: u32 = 0x2BAD_B002;
/// EAX value a Multiboot2 loader passes.
pub const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;
/// The PVH start-info magic; the PVH entry stub passes it in EAX itself.
pub const PVH_MAGIC: u32 = 0x336E_C578;

#[cfg(test)]
mod tests {
    use crate::PhysReader;

    /// Physical memory for host tests: a byte buffer starting at address 0.
    pub(crate) struct FakeMemory(Vec<u8>);

    impl FakeMemory {
        pub(crate) fn new(size: usize) -> Self {
            FakeMemory(vec![0; size])
        }
        pub(crate) fn put_bytes(&mut self, at: u64, b: &[u8]) {
            self.0[at as usize..at as usize + b.len()].copy_from_slice(b);
        }
        pub(crate) fn put_str(&mut self, at: u64, s: &str) {
            self.put_bytes(at, s.as_bytes());
            self.0[at as usize + s.len()] = 0;
        }
        pub(crate) fn put32(&mut self, at: u64, v: u32) {
            self.put_bytes(at, &v.to_le_bytes());
        }
        pub(crate) fn put64(&mut self, at: u64, v: u64) {
            self.put_bytes(at, &v.to_le_bytes());
        }
    }

    impl PhysReader for FakeMemory {
        fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
            let start = usize::try_from(addr).ok()?;
            self.0.get(start..start.checked_add(len)?)
        }
    }

    #[test]
    fn unknown_magic_is_reported() {
        let m = FakeMemory::new(16);
        assert_eq!(
            crate::BootInfo::parse(0xdead, 0, &m).err(),
            Some(crate::BootError::UnknownMagic(0xdead))
        );
    }
}
