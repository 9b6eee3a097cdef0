//! The descriptor ring both drivers hand work to the IOMMU through: 128-bit entries in a
//! power-of-two ring in memory, a tail the driver owns and a head the IOMMU owns.
//!
//! VT-d calls it the invalidation queue, AMD-Vi the command buffer; the bookkeeping is the
//! same and lives here. What differs stays with each driver: which registers hold the head
//! and tail and how they encode them, how completion is signalled, and how errors show.
//! The ring never touches a register: it says which tail to publish and takes the head
//! values the driver read.

use crate::error::HwError;
use crate::platform::{PhysAddr, PhysMemory};

/// Bytes per entry: two little-endian quadwords.
pub const ENTRY_SIZE: u64 = 16;

/// Largest ring, as log2 of its entries: 2^15 is the most either specification allows
/// (VT-d IQA.QS = 7, AMD-Vi ComLen = 15).
pub const MAX_ENTRIES_LOG2: u32 = 15;

/// Whether entries must be flushed from the CPU caches before the IOMMU may read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryVisibility {
    /// The IOMMU snoops CPU caches: a plain write is enough.
    Coherent,
    /// Every entry written is followed by [`PhysMemory::flush_for_device`].
    FlushEachEntry,
}

/// A ring of [`ENTRY_SIZE`]-byte entries at `base`. Positions (tail, head, published) are
/// entry indices in `0..entries()`; one slot always stays empty so that a full ring is
/// distinguishable from an empty one.
#[derive(Debug)]
pub struct DescriptorRing {
    base: PhysAddr,
    entries: u64,
    visibility: EntryVisibility,
    /// Next slot to write.
    tail: u64,
    /// Tail last handed to the IOMMU (written to its tail register).
    published: u64,
    /// Head last read from the IOMMU. Conservative: the real head only moves towards the
    /// tail, so space computed from an old value is never more than there is.
    head_seen: u64,
}

impl DescriptorRing {
    /// An empty ring of `2^entries_log2` entries (at most 2^[`MAX_ENTRIES_LOG2`]) in the
    /// zeroed, physically contiguous memory at `base`.
    pub const fn new(base: PhysAddr, entries_log2: u32, visibility: EntryVisibility) -> Self {
        let log2 = if entries_log2 > MAX_ENTRIES_LOG2 { MAX_ENTRIES_LOG2 } else { entries_log2 };
        DescriptorRing { base, entries: 1 << log2, visibility, tail: 0, published: 0, head_seen: 0 }
    }

    /// Physical address of entry 0.
    pub fn base(&self) -> PhysAddr {
        self.base
    }
    /// Number of slots (one of them always empty).
    pub fn entries(&self) -> u64 {
        self.entries
    }
    /// Size of the ring in bytes.
    pub fn bytes(&self) -> u64 {
        self.entries * ENTRY_SIZE
    }
    /// Index of the next slot to write.
    pub fn tail(&self) -> u64 {
        self.tail
    }
    /// Tail index last handed to the IOMMU.
    pub fn published(&self) -> u64 {
        self.published
    }
    /// Head index last reported through [`observe_head`](Self::observe_head).
    pub fn head_seen(&self) -> u64 {
        self.head_seen
    }

    /// Empties the ring (tail, published tail and head all 0), for when the driver has just
    /// written 0 to the IOMMU's head and tail registers.
    pub fn reset(&mut self) {
        self.tail = 0;
        self.published = 0;
        self.head_seen = 0;
    }

    /// Slots free for new entries if the IOMMU's head is at index `head` (taken modulo the
    /// ring size, so a head that reads as the ring size after a wrap means 0).
    pub fn free_slots(&self, head: u64) -> u64 {
        let head = head % self.entries;
        let used = (self.tail + self.entries - head) % self.entries;
        self.entries - used - 1
    }

    /// True when no slot is free as of the last head seen: publish and wait for the IOMMU
    /// to move its head (through [`observe_head`](Self::observe_head)) before pushing.
    pub fn is_full(&self) -> bool {
        self.free_slots(self.head_seen) == 0
    }

    /// Records a head index read from the IOMMU (modulo the ring size); true when that
    /// leaves a slot free. Meant as the condition of a bounded poll on the head register.
    pub fn observe_head(&mut self, head: u64) -> bool {
        self.head_seen = head % self.entries;
        !self.is_full()
    }

    /// Records that the IOMMU consumed every published entry (the driver saw a completion
    /// it had queued last), so the whole ring but one slot is free again.
    pub fn mark_consumed(&mut self) {
        self.head_seen = self.published;
    }

    /// Writes `entry` at the tail and advances it; the IOMMU sees it only after the next
    /// [`publish`](Self::publish). Refused, with nothing written, when the ring is full.
    pub fn push<M: PhysMemory>(&mut self, mem: &mut M, entry: [u64; 2]) -> Result<(), HwError> {
        if self.is_full() {
            return Err(HwError::QueueError { what: "descriptor ring full (wait for space)" });
        }
        self.write_entry(mem, self.tail, entry);
        self.tail = (self.tail + 1) % self.entries;
        Ok(())
    }

    /// Replaces the entry at `index` (modulo the ring size): for error recovery, where the
    /// IOMMU stopped at a rejected entry that must be made harmless before it goes on.
    pub fn overwrite<M: PhysMemory>(&mut self, mem: &mut M, index: u64, entry: [u64; 2]) {
        self.write_entry(mem, index % self.entries, entry);
    }

    /// The tail index to write to the IOMMU's tail register if entries were pushed since
    /// the last publication (and records it as published), else `None`.
    pub fn publish(&mut self) -> Option<u64> {
        if self.published == self.tail {
            return None;
        }
        self.published = self.tail;
        Some(self.tail)
    }

    fn write_entry<M: PhysMemory>(&self, mem: &mut M, index: u64, [q0, q1]: [u64; 2]) {
        let at = self.base + index * ENTRY_SIZE;
        mem.write_u64(at, q0);
        mem.write_u64(at + 8, q1);
        if self.visibility == EntryVisibility::FlushEachEntry {
            mem.flush_for_device(at, ENTRY_SIZE);
        }
    }
}

#[cfg(test)]
mod tests;
