//! Unmapping whole pages, and collecting the tables that became empty; or, for release
//! from the leaves, keeping whole subtrees intact (unlinked) so the pages they map can be
//! read from their entries once the invalidation completed.

use alloc::vec::Vec;

use super::{Dirty, PageTable, Unmapped};
use crate::pgtable::{level_index, level_shift, MapError, Pte, PteFormat, TableMemory, ENTRIES};
use crate::platform::PhysAddr;

impl<F: PteFormat> PageTable<F> {
    /// Unmaps every page that intersects `[iova, iova + size)`, whole pages only, and
    /// frees tables that became empty into `freed` (the caller frees them once the IOTLB
    /// no longer can hold them). Returns what was really unmapped.
    pub fn unmap<M: TableMemory>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        freed: &mut alloc::vec::Vec<PhysAddr>,
    ) -> Result<Unmapped, MapError> {
        let end = self.check_range(iova, size)?;
        let mut out = Unmapped::default();
        self.unmap_in(mem, self.root, self.levels(), iova, end, &mut out, freed, true, None);
        Ok(out)
    }

    /// As [`unmap`](Self::unmap), but whole subtrees inside the range are unlinked with
    /// their entries intact and recorded in `kept` (with the leaves cleared in place), so
    /// the host pages they map can be read from them after the invalidation instead of
    /// from a second record. Nothing in `kept` may be read or freed before then.
    pub fn unmap_keeping<M: TableMemory>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        freed: &mut Vec<PhysAddr>,
        kept: &mut Detached,
    ) -> Result<Unmapped, MapError> {
        let end = self.check_range(iova, size)?;
        let mut out = Unmapped::default();
        self.unmap_in(mem, self.root, self.levels(), iova, end, &mut out, freed, true, Some(kept));
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn unmap_in<M: TableMemory>(
        &mut self,
        mem: &mut M,
        table: PhysAddr,
        level: u32,
        start: u64,
        end: u64,
        out: &mut Unmapped,
        freed: &mut alloc::vec::Vec<PhysAddr>,
        free_tables: bool,
        mut kept: Option<&mut Detached>,
    ) {
        let shift = level_shift(level);
        let mut dirty = Dirty::new(table);
        let mut va = start;
        while va < end {
            let idx = level_index(va, level);
            let entry_base = va & !((1u64 << shift) - 1);
            let entry_end = entry_base + (1u64 << shift);
            match self.format.decode(self.read(mem, table, idx), level) {
                Pte::Empty => va = entry_end,
                Pte::Leaf { order, paddr, .. } => {
                    if let Some(k) = kept.as_deref_mut() {
                        k.push_leaf(paddr, 1u64 << order);
                    }
                    let page = va & !((1u64 << order) - 1);
                    let first = level_index(page, level);
                    let count = 1usize << (order - shift);
                    for i in first..first + count {
                        mem.write_u64(table + 8 * i as u64, 0);
                    }
                    dirty.mark(first, count);
                    out.cover(page, page + (1u64 << order));
                    va = page + (1u64 << order);
                }
                Pte::Table(child) => {
                    if free_tables && va == entry_base && end >= entry_end {
                        mem.write_u64(table + 8 * idx as u64, 0);
                        dirty.mark(idx, 1);
                        out.cover(entry_base, entry_end);
                        match kept.as_deref_mut() {
                            Some(k) => k.subtrees.push((child, level - 1)),
                            None => self.collect_tables(mem, child, level - 1, freed),
                        }
                    } else {
                        let child_end = end.min(entry_end);
                        self.unmap_in(
                            mem,
                            child,
                            level - 1,
                            va,
                            child_end,
                            out,
                            freed,
                            free_tables,
                            kept.as_deref_mut(),
                        );
                        let hint = level_index(child_end - 1, level - 1);
                        if free_tables && self.table_is_empty(mem, child, hint) {
                            mem.write_u64(table + 8 * idx as u64, 0);
                            dirty.mark(idx, 1);
                            freed.push(child);
                        }
                    }
                    va = entry_end;
                }
            }
        }
        dirty.flush(mem);
    }

    /// Scans for a used entry starting at `hint` (the last entry the unmap touched: a table
    /// entry there is usually still present, a cleared leaf is usually followed by a used
    /// one), wrapping around.
    fn table_is_empty<M: TableMemory>(&self, mem: &M, table: PhysAddr, hint: usize) -> bool {
        let hint = hint % ENTRIES;
        (hint..ENTRIES).chain(0..hint).all(|i| self.read(mem, table, i) == 0)
    }

    /// Pushes `table` and every table below it onto `out` (leaf tables are not read).
    pub(super) fn collect_tables<M: TableMemory>(
        &self,
        mem: &M,
        table: PhysAddr,
        level: u32,
        out: &mut alloc::vec::Vec<PhysAddr>,
    ) {
        out.push(table);
        if level == 1 {
            return;
        }
        for i in 0..ENTRIES {
            if let Pte::Table(child) = self.format.decode(self.read(mem, table, i), level) {
                self.collect_tables(mem, child, level - 1, out);
            }
        }
    }
}

/// What [`PageTable::unmap_keeping`] took out of the tables: whole subtrees, unlinked but
/// intact, and the leaves it cleared in place (merged into physically contiguous runs).
#[derive(Debug, Default)]
pub struct Detached {
    /// (table, its level): every page reachable from it is still mapped in its entries.
    pub subtrees: Vec<(PhysAddr, u32)>,
    /// (physical address, bytes) of leaves cleared in place.
    pub leaves: Vec<(PhysAddr, u64)>,
}

impl Detached {
    fn push_leaf(&mut self, paddr: PhysAddr, len: u64) {
        match self.leaves.last_mut() {
            Some(last) if last.0 + last.1 == paddr => last.1 += len,
            _ => self.leaves.push((paddr, len)),
        }
    }

    /// Moves everything of `other` here.
    pub fn absorb(&mut self, other: &mut Detached) {
        self.subtrees.append(&mut other.subtrees);
        self.leaves.append(&mut other.leaves);
    }

    /// True when nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.subtrees.is_empty() && self.leaves.is_empty()
    }

    /// Bytes of bookkeeping this record holds (its vectors' capacity).
    pub fn bytes(&self) -> u64 {
        16 * (self.subtrees.capacity() + self.leaves.capacity()) as u64
    }
}

/// Reads every leaf of the detached subtree `table` (at `level`), hands each physically
/// contiguous run to `sink` (merged across entries), and frees its table pages. Returns
/// the entries read. Only once an invalidation covering the subtree's IOVA completed.
pub fn drain_subtree<F: PteFormat, M: TableMemory>(
    format: &F,
    mem: &mut M,
    table: PhysAddr,
    level: u32,
    run: &mut Option<(PhysAddr, u64)>,
    sink: &mut dyn FnMut(PhysAddr, u64),
) -> u64 {
    let shift = level_shift(level);
    let mut reads = 0;
    let mut i = 0;
    while i < ENTRIES {
        reads += 1;
        match format.decode(mem.read_u64(table + 8 * i as u64), level) {
            Pte::Empty => i += 1,
            Pte::Table(child) if level > 1 => {
                reads += drain_subtree(format, mem, child, level - 1, run, sink);
                i += 1;
            }
            Pte::Table(_) => i += 1,
            Pte::Leaf { paddr, order, .. } => {
                let len = 1u64 << order;
                match run {
                    Some(r) if r.0 + r.1 == paddr => r.1 += len,
                    _ => {
                        if let Some((p, l)) = run.replace((paddr, len)) {
                            sink(p, l);
                        }
                    }
                }
                // Replicated entries of one page (AMD-Vi NextLevel-7) are read once.
                i = (i & !((1usize << (order - shift)) - 1)) + (1usize << (order - shift));
            }
        }
    }
    mem.free_frame(table);
    reads
}
