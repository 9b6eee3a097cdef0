//! Unmapping whole pages, and collecting the tables that became empty.

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
        self.unmap_in(mem, self.root, self.levels(), iova, end, &mut out, freed, true);
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
                Pte::Leaf { order, .. } => {
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
                        self.collect_tables(mem, child, level - 1, freed);
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
