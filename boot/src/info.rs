//! The protocol-independent boot information the kernel starts from.

use core::fmt;

/// Which boot protocol started us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Multiboot1 (QEMU `-kernel`, a.out kludge).
    Multiboot1,
    /// Multiboot2 (GRUB, BIOS or UEFI).
    Multiboot2,
    /// Xen PVH direct boot (QEMU `-kernel` of an ELF with the PVH note).
    Pvh,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Multiboot1 => "Multiboot1",
            Protocol::Multiboot2 => "Multiboot2",
            Protocol::Pvh => "PVH",
        })
    }
}

/// What a range of physical memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Free RAM.
    Usable,
    /// Firmware-reserved (or unknown): never allocated.
    Reserved,
    /// ACPI tables, reclaimable once parsed (we keep them).
    AcpiReclaimable,
    /// ACPI non-volatile storage.
    AcpiNvs,
    /// Defective RAM.
    Bad,
}

/// One entry of the boot memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the range is.
    pub kind: MemoryKind,
}

impl MemoryRegion {
    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// A boot module (for example a partition configuration file or a guest image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    /// First byte in physical memory.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Offset of the module's command line within [`BootInfo::strings`].
    pub name: StrRef,
}

/// A string stored in [`BootInfo`]'s own buffer (so BootInfo owns no loader memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StrRef {
    start: u16,
    len: u16,
}

/// How the loader handed over the ACPI RSDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rsdp {
    /// Its physical address (PVH).
    Address(u64),
    /// A copy of its bytes (Multiboot2 tags 14 and 15, which live in loader memory that
    /// may be reused, so BootInfo keeps the copy itself). Revision 0 uses 20 bytes.
    Copy([u8; 36]),
}

/// Maximum number of memory-map entries kept.
pub const MAX_REGIONS: usize = 128;
/// Maximum number of modules kept.
pub const MAX_MODULES: usize = 8;
/// Bytes kept for the command line and module names together.
pub(crate) const STRINGS: usize = 1024;

/// Everything the kernel needs from the boot loader, whichever protocol it spoke.
#[derive(Clone)]
pub struct BootInfo {
    /// The protocol that started us.
    pub protocol: Protocol,
    regions: [MemoryRegion; MAX_REGIONS],
    region_count: usize,
    modules: [Module; MAX_MODULES],
    module_count: usize,
    /// Where the ACPI RSDP is, when the loader said.
    pub rsdp: Option<Rsdp>,
    cmdline: StrRef,
    strings: [u8; STRINGS],
    strings_used: usize,
    /// Memory-map entries the loader gave beyond [`MAX_REGIONS`] (dropped).
    pub dropped_regions: usize,
}

/// Why boot information could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// EAX held no magic we know.
    UnknownMagic(u32),
    /// A loader structure lies outside readable memory or is truncated.
    BadPointer {
        /// Which structure.
        what: &'static str,
        /// Its physical address.
        addr: u64,
    },
    /// A loader structure is malformed.
    Malformed(&'static str),
    /// The loader gave no memory map.
    NoMemoryMap,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::UnknownMagic(m) => write!(f, "unknown boot loader magic {m:#x}"),
            BootError::BadPointer { what, addr } => {
                write!(f, "boot loader's {what} at {addr:#x} is not readable")
            }
            BootError::Malformed(what) => write!(f, "malformed boot information: {what}"),
            BootError::NoMemoryMap => f.write_str("the boot loader gave no memory map"),
        }
    }
}

/// Reads loader structures from physical memory (identity-mapped at boot; a byte
/// buffer in host tests).
pub trait PhysReader {
    /// The `len` bytes at physical `addr`, or `None` when not readable.
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]>;
}

impl BootInfo {
    pub(crate) fn new(protocol: Protocol) -> Self {
        BootInfo {
            protocol,
            regions: [MemoryRegion { start: 0, len: 0, kind: MemoryKind::Reserved }; MAX_REGIONS],
            region_count: 0,
            modules: [Module { start: 0, end: 0, name: StrRef::default() }; MAX_MODULES],
            module_count: 0,
            rsdp: None,
            cmdline: StrRef::default(),
            strings: [0; STRINGS],
            strings_used: 0,
            dropped_regions: 0,
        }
    }

    /// Parses the loader's structures: `magic` is EAX at entry, `info` EBX.
    pub fn parse(magic: u32, info: u64, mem: &dyn PhysReader) -> Result<BootInfo, BootError> {
        let bi = match magic {
            crate::MULTIBOOT1_MAGIC => crate::multiboot1::parse(info, mem)?,
            crate::MULTIBOOT2_MAGIC => crate::multiboot2::parse(info, mem)?,
            crate::PVH_MAGIC => crate::pvh::parse(info, mem)?,
            other => return Err(BootError::UnknownMagic(other)),
        };
        if bi.region_count == 0 {
            return Err(BootError::NoMemoryMap);
        }
        Ok(bi)
    }

    /// The memory map, sorted by start address.
    pub fn memory_map(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// Boot modules in loader order.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }

    /// The kernel command line ("" when none).
    pub fn cmdline(&self) -> &str {
        self.string(self.cmdline)
    }

    /// A string kept in this BootInfo (module names, command line).
    pub fn string(&self, s: StrRef) -> &str {
        let bytes = &self.strings[s.start as usize..(s.start + s.len) as usize];
        core::str::from_utf8(bytes).unwrap_or("<not utf-8>")
    }

    /// Total bytes of usable RAM (saturating: the loader's lengths are untrusted, and a
    /// map whose regions add up past 2^64 must not overflow; found by the `boot_info`
    /// fuzz target).
    pub fn usable_bytes(&self) -> u64 {
        self.memory_map()
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .fold(0u64, |sum, r| sum.saturating_add(r.len))
    }

    pub(crate) fn push_region(&mut self, start: u64, len: u64, kind: MemoryKind) {
        if len == 0 {
            return;
        }
        if self.region_count == MAX_REGIONS {
            self.dropped_regions += 1;
            return;
        }
        // Insertion sort keeps the map ordered whatever order the loader used.
        let mut i = self.region_count;
        while i > 0 && self.regions[i - 1].start > start {
            self.regions[i] = self.regions[i - 1];
            i -= 1;
        }
        self.regions[i] = MemoryRegion { start, len, kind };
        self.region_count += 1;
    }

    pub(crate) fn push_module(&mut self, start: u64, end: u64, name: &[u8]) {
        if self.module_count == MAX_MODULES || end < start {
            return;
        }
        let name = self.store(name);
        self.modules[self.module_count] = Module { start, end, name };
        self.module_count += 1;
    }

    pub(crate) fn set_cmdline(&mut self, bytes: &[u8]) {
        self.cmdline = self.store(bytes);
    }

    /// Copies a (NUL-terminated or plain) string into the buffer, truncating if full and
    /// cutting at a UTF-8 boundary.
    fn store(&mut self, bytes: &[u8]) -> StrRef {
        let bytes = match bytes.iter().position(|&b| b == 0) {
            Some(n) => &bytes[..n],
            None => bytes,
        };
        let room = STRINGS - self.strings_used;
        let mut n = bytes.len().min(room);
        while n > 0 && core::str::from_utf8(&bytes[..n]).is_err() {
            n -= 1;
        }
        let start = self.strings_used;
        self.strings[start..start + n].copy_from_slice(&bytes[..n]);
        self.strings_used += n;
        StrRef { start: start as u16, len: n as u16 }
    }
}

/// Reads a little-endian u32 at `off` of `b`, if in bounds.
pub(crate) fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a little-endian u64 at `off` of `b`, if in bounds.
pub(crate) fn le64(b: &[u8], off: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

/// Reads a NUL-terminated string of at most `max` bytes at `addr`.
pub(crate) fn read_cstr(mem: &dyn PhysReader, addr: u64, max: usize) -> &[u8] {
    // Try shrinking windows: the string may sit near the end of readable memory.
    let mut len = max;
    while len > 0 {
        if let Some(b) = mem.read(addr, len) {
            let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            return &b[..n];
        }
        len /= 2;
    }
    &[]
}

#[cfg(test)]
mod usable_tests {
    use super::*;

    #[test]
    fn usable_bytes_saturates_instead_of_overflowing() {
        let mut bi = BootInfo::new(Protocol::Multiboot1);
        bi.push_region(0, u64::MAX - 10, MemoryKind::Usable);
        bi.push_region(u64::MAX - 10, 1 << 20, MemoryKind::Usable);
        assert_eq!(bi.usable_bytes(), u64::MAX);
    }
}
