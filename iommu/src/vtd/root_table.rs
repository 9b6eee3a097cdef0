//! The root table (one 4 KiB page of 256 root entries, one per PCI bus) and the per-bus
//! context tables it points to, kept in frames from the platform's allocator.

use crate::error::HwError;
use crate::platform::{FrameAllocator, PhysAddr, PhysMemory, PAGE_SIZE};

use super::context::{split_rid, ContextEntry};

/// A legacy root entry (VT-d spec 9.1): P in bit 0, context-table address in 63:12,
/// upper 64 bits reserved (zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RootEntry {
    /// Bits 63:0 of the entry.
    pub lo: u64,
}

impl RootEntry {
    /// A present entry pointing at the context table in frame `table`.
    pub fn pointing_to(table: PhysAddr) -> Self {
        RootEntry { lo: (table & !0xFFF) | 1 }
    }
    /// Whether the present bit is set.
    pub fn present(&self) -> bool {
        self.lo & 1 != 0
    }
    /// Address of the context table this entry points to.
    pub fn context_table(&self) -> PhysAddr {
        self.lo & !0xFFF
    }
}

/// Owns the root table frame and the context-table frames hanging off it.
///
/// Entries are written with 64-bit stores in the order that keeps the unit from ever
/// seeing a half-written present entry: the high word first, then the word with P.
/// When the unit is not coherent (ECAP.C = 0) every written entry is flushed from CPU caches.
#[derive(Debug)]
pub struct RootTable {
    base: PhysAddr,
    coherent: bool,
}

impl RootTable {
    /// Allocates a zeroed root table.
    pub fn new<P: FrameAllocator + PhysMemory>(
        mem: &mut P,
        coherent: bool,
    ) -> Result<Self, HwError> {
        let base = alloc_table(mem, coherent)?;
        Ok(RootTable { base, coherent })
    }

    /// Physical address of the root table (the value for RTADDR).
    pub fn address(&self) -> PhysAddr {
        self.base
    }

    /// Reads the root entry for `bus`.
    pub fn root_entry<P: PhysMemory>(&self, mem: &P, bus: u8) -> RootEntry {
        RootEntry { lo: mem.read_u64(self.base + u64::from(bus) * 16) }
    }

    /// Reads the context entry for requester id `rid` (zero when its bus has no table).
    pub fn context_entry<P: PhysMemory>(&self, mem: &P, rid: u16) -> ContextEntry {
        let (bus, devfn) = split_rid(rid);
        let root = self.root_entry(mem, bus);
        if !root.present() {
            return ContextEntry::default();
        }
        let at = root.context_table() + u64::from(devfn) * 16;
        ContextEntry { lo: mem.read_u64(at), hi: mem.read_u64(at + 8) }
    }

    /// Writes the context entry for `rid`, allocating the bus's context table if needed.
    pub fn set_context_entry<P: FrameAllocator + PhysMemory>(
        &mut self,
        mem: &mut P,
        rid: u16,
        entry: ContextEntry,
    ) -> Result<(), HwError> {
        let (bus, devfn) = split_rid(rid);
        let mut root = self.root_entry(mem, bus);
        if !root.present() {
            let table = alloc_table(mem, self.coherent)?;
            root = RootEntry::pointing_to(table);
            let at = self.base + u64::from(bus) * 16;
            mem.write_u64(at + 8, 0);
            mem.write_u64(at, root.lo);
            self.flush(mem, at);
        }
        let at = root.context_table() + u64::from(devfn) * 16;
        if entry.present() {
            // Not present while the high word changes, then present with both words valid.
            mem.write_u64(at, 0);
            mem.write_u64(at + 8, entry.hi);
            mem.write_u64(at, entry.lo);
        } else {
            mem.write_u64(at, entry.lo);
            mem.write_u64(at + 8, entry.hi);
        }
        self.flush(mem, at);
        Ok(())
    }

    /// Frees every context table and the root table itself (call only with translation off).
    pub fn free<P: FrameAllocator + PhysMemory>(self, mem: &mut P) {
        for bus in 0..=255u8 {
            let root = self.root_entry(mem, bus);
            if root.present() {
                mem.free_frame(root.context_table());
            }
        }
        mem.free_frame(self.base);
    }

    fn flush<P: PhysMemory>(&self, mem: &mut P, entry_at: PhysAddr) {
        if !self.coherent {
            mem.flush_for_device(entry_at, 16);
        }
    }
}

/// A zeroed table frame, flushed from CPU caches when the unit does not snoop them.
fn alloc_table<P: FrameAllocator + PhysMemory>(
    mem: &mut P,
    coherent: bool,
) -> Result<PhysAddr, HwError> {
    let frame = mem.alloc_zeroed_frame().ok_or(HwError::OutOfMemory)?;
    if !coherent {
        mem.flush_for_device(frame, PAGE_SIZE);
    }
    Ok(frame)
}
