//! Mapping: the largest pages alignment allows, and the rollback of a map that failed
//! half way (its tables unlinked and kept, with the span, for the next invalidation).

use super::{alloc_table, Dirty, PageTable, Unmapped};
use crate::pgtable::{
    level_index, level_shift, MapError, Prot, Pte, PteFormat, TableMemory, ENTRIES, PADDR_MASK,
};

/// Page sizes strictly between a level's entry size (`2^shift`) and the next level's.
fn level_sizes_between(shift: u32) -> u64 {
    crate::pgtable::size_range(shift + 1, shift + 8)
}
use crate::platform::PhysAddr;

impl<F: PteFormat> PageTable<F> {
    /// The largest allowed page order for `va -> pa` with `left` bytes to go.
    fn best_order(&self, va: u64, pa: u64, left: u64) -> u32 {
        let align = (va | pa).trailing_zeros().min(63);
        let fit = 63 - left.leading_zeros();
        let max = align.min(fit);
        let candidates = self.page_sizes & (u64::MAX >> (63 - max));
        63 - candidates.leading_zeros()
    }

    /// Maps `[iova, iova + size)` to `[paddr, paddr + size)` with the largest pages that
    /// alignment and the page-size bitmap allow. On failure nothing stays mapped: tables
    /// made on the way are unlinked and wait, with the span, in
    /// [`take_rolled_back`](Self::take_rolled_back) for the next invalidation.
    pub fn map<M: TableMemory>(
        &mut self,
        mem: &mut M,
        iova: u64,
        paddr: PhysAddr,
        size: u64,
        prot: Prot,
    ) -> Result<(), MapError> {
        self.check_range(iova, size)?;
        if prot.is_empty() {
            return Err(MapError::NoAccess);
        }
        let last = paddr.checked_add(size - 1).ok_or(MapError::BadRange)?;
        if paddr & 0xFFF != 0 || last & !PADDR_MASK & !0xFFF != 0 {
            return Err(MapError::BadRange);
        }
        self.map_pieces(mem, iova, size, &mut core::iter::once((paddr, size)), prot)
    }

    /// Maps `[iova, iova + size)` to the physical `pieces` (address, length) in order, as
    /// [`map`](Self::map) would map each, but in one walk: the position in the tables is
    /// kept from one piece to the next, so consecutive small pieces cost one entry each.
    /// The pieces must cover `size` exactly. On failure nothing stays mapped.
    pub fn map_pieces<M: TableMemory>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        pieces: &mut dyn Iterator<Item = (PhysAddr, u64)>,
        prot: Prot,
    ) -> Result<(), MapError> {
        let end = self.check_range(iova, size)?;
        if prot.is_empty() {
            return Err(MapError::NoAccess);
        }
        let mut va = iova;
        let mut src = Source { pa: 0, left: 0, rest: pieces, bad: false };
        src.advance(0);
        let mut unlinked = core::mem::take(&mut self.unlinked);
        let result = self.map_in(
            mem,
            self.root,
            self.levels(),
            false,
            &mut va,
            end,
            &mut src,
            prot,
            &mut unlinked,
        );
        let result = result.and_then(|()| {
            if src.left != 0 || src.rest.next().is_some() {
                Err(MapError::BadRange)
            } else {
                Ok(())
            }
        });
        if result.is_err() {
            if va > iova {
                // Free emptied tables too: left linked, an empty table would make a later
                // superpage map over it fail with AlreadyMapped.
                let mut ignored = Unmapped::default();
                self.unmap_in(
                    mem,
                    self.root,
                    self.levels(),
                    iova,
                    va,
                    &mut ignored,
                    &mut unlinked,
                    true,
                    None,
                );
            }
            // A device may have walked (and cached) what was briefly linked.
            self.rolled_back.cover(iova, end);
        }
        self.unlinked = unlinked;
        result
    }

    /// Keeps `[start, end)` (if nonempty) and `tables` for [`take_rolled_back`]: work of
    /// a flush that failed, so its table pages are neither leaked nor freed too early.
    ///
    /// [`take_rolled_back`]: Self::take_rolled_back
    pub fn defer_invalidation(
        &mut self,
        start: u64,
        end: u64,
        tables: &mut alloc::vec::Vec<PhysAddr>,
    ) {
        if start < end {
            self.rolled_back.cover(start, end);
        }
        self.unlinked.append(tables);
    }

    /// Hands over what failed maps left for the next invalidation: table pages to free
    /// (pushed onto `freed`) once the returned span has been invalidated.
    pub fn take_rolled_back(&mut self, freed: &mut alloc::vec::Vec<PhysAddr>) -> Unmapped {
        freed.append(&mut self.unlinked);
        core::mem::take(&mut self.rolled_back)
    }

    /// Maps `[*va, end)` into `table` at `level`, advancing `*va` as it goes. `fresh`: the
    /// table was made by this map, which writes it in increasing order, so every entry
    /// from `*va` on is known empty and is not read back.
    #[allow(clippy::too_many_arguments)]
    fn map_in<M: TableMemory>(
        &mut self,
        mem: &mut M,
        table: PhysAddr,
        level: u32,
        fresh: bool,
        va: &mut u64,
        end: u64,
        src: &mut Source<'_>,
        prot: Prot,
        unlinked: &mut alloc::vec::Vec<PhysAddr>,
    ) -> Result<(), MapError> {
        let shift = level_shift(level);
        let mut dirty = Dirty::new(table);
        let result = (|| {
            while *va < end {
                if src.bad || src.left == 0 {
                    return Err(MapError::BadRange);
                }
                let idx = level_index(*va, level);
                let pa = src.pa;
                if level == 1 && self.page_sizes & level_sizes_between(shift) == 0 {
                    // Every entry left in this leaf table is one 4 KiB page, whatever the
                    // pieces: the whole run in one pass.
                    self.fill_leaf_table(mem, table, fresh, va, end, src, prot, &mut dirty)?;
                    continue;
                }
                let order = self.best_order(*va, pa, (end - *va).min(src.left));
                if order == shift && self.page_sizes & level_sizes_between(shift) == 0 {
                    // No page size between this level's and the next: every page left in
                    // this table is one entry of this size. Check and write them in one
                    // pass, the entry computed once (its address field steps by the size).
                    let n = (((end - *va).min(src.left) >> shift) as usize).min(ENTRIES - idx);
                    if !fresh {
                        if let Some(i) = self.first_used(mem, table, idx, n) {
                            return Err(MapError::AlreadyMapped {
                                iova: *va + ((i as u64) << shift),
                            });
                        }
                    }
                    let first = self.format.leaf_entry(pa, level, order, prot);
                    mem.write_run(table + 8 * idx as u64, first, 1 << shift, n);
                    dirty.mark(idx, n);
                    *va += (n as u64) << shift;
                    src.advance((n as u64) << shift);
                } else if order >= shift {
                    let count = 1usize << (order - shift);
                    if !fresh && self.first_used(mem, table, idx, count).is_some() {
                        return Err(MapError::AlreadyMapped { iova: *va });
                    }
                    let pte = self.format.leaf_entry(pa, level, order, prot);
                    mem.write_run(table + 8 * idx as u64, pte, 0, count);
                    dirty.mark(idx, count);
                    *va += 1 << order;
                    src.advance(1 << order);
                } else {
                    let pte = if fresh {
                        Pte::Empty
                    } else {
                        self.format.decode(self.read(mem, table, idx), level)
                    };
                    let (child, created) = match pte {
                        Pte::Table(child) => (child, false),
                        Pte::Leaf { .. } => return Err(MapError::AlreadyMapped { iova: *va }),
                        Pte::Empty => {
                            let child = alloc_table(mem)?;
                            mem.write_u64(
                                table + 8 * idx as u64,
                                self.format.table_entry(child, level),
                            );
                            dirty.mark(idx, 1);
                            (child, true)
                        }
                    };
                    let entry_end = (*va | ((1u64 << shift) - 1)) + 1;
                    let before = *va;
                    let sub_end = end.min(entry_end);
                    let sub = self.map_in(
                        mem,
                        child,
                        level - 1,
                        created,
                        va,
                        sub_end,
                        src,
                        prot,
                        unlinked,
                    );
                    if sub.is_err() && created && *va == before {
                        // Nothing landed in the new table (its own new children were
                        // unlinked the same way): unlink it so no empty table stays.
                        mem.write_u64(table + 8 * idx as u64, 0);
                        unlinked.push(child);
                    }
                    sub?;
                }
            }
            Ok(())
        })();
        dirty.flush(mem);
        result
    }
}

/// Leaf entries gathered for one write (fragmented memory: one entry per piece).
const LEAF_BATCH: usize = 64;

impl<F: PteFormat> PageTable<F> {
    /// Maps `[*va, end)` up to the end of the leaf table `table`, where every entry is one
    /// 4 KiB page: the run is checked free once (not at all in a fresh table), then each
    /// piece's entries are written as one run, or, for short pieces, gathered and written
    /// a batch at a time. No per-entry walk, size choice or bounds check.
    #[allow(clippy::too_many_arguments)]
    fn fill_leaf_table<M: TableMemory>(
        &self,
        mem: &mut M,
        table: PhysAddr,
        fresh: bool,
        va: &mut u64,
        end: u64,
        src: &mut Source<'_>,
        prot: Prot,
        dirty: &mut Dirty,
    ) -> Result<(), MapError> {
        let idx = level_index(*va, 1);
        let total = (((end - *va) >> 12) as usize).min(ENTRIES - idx);
        if !fresh {
            if let Some(i) = self.first_used(mem, table, idx, total) {
                return Err(MapError::AlreadyMapped { iova: *va + ((i as u64) << 12) });
            }
        }
        let mut batch = [0u64; LEAF_BATCH];
        let (mut len, mut at) = (0usize, idx);
        let mut i = idx;
        let mut result = Ok(());
        while i < idx + total {
            if src.bad || src.left == 0 {
                result = Err(MapError::BadRange);
                break;
            }
            let k = ((src.left >> 12) as usize).min(idx + total - i);
            let first = self.format.leaf_entry(src.pa, 1, 12, prot);
            if k >= LEAF_BATCH / 8 {
                mem.write_words(table + 8 * at as u64, &batch[..len]);
                mem.write_run(table + 8 * i as u64, first, 1 << 12, k);
                (len, at) = (0, i + k);
            } else {
                for j in 0..k {
                    if len == LEAF_BATCH {
                        mem.write_words(table + 8 * at as u64, &batch);
                        (len, at) = (0, at + LEAF_BATCH);
                    }
                    batch[len] = first + ((j as u64) << 12);
                    len += 1;
                }
            }
            i += k;
            *va += (k as u64) << 12;
            src.advance((k as u64) << 12);
        }
        mem.write_words(table + 8 * at as u64, &batch[..len]);
        dirty.mark(idx, i - idx);
        result
    }
}

/// Where the next bytes of a map come from: the current piece and the ones after it.
struct Source<'a> {
    pa: PhysAddr,
    left: u64,
    rest: &'a mut dyn Iterator<Item = (PhysAddr, u64)>,
    /// A piece was misaligned, empty or beyond what the formats can encode.
    bad: bool,
}

impl Source<'_> {
    /// Consumes `n` bytes of the current piece, moving to the next when it is used up.
    fn advance(&mut self, n: u64) {
        self.pa += n;
        self.left -= n;
        if self.left == 0 {
            if let Some((pa, len)) = self.rest.next() {
                let last = pa.checked_add(len.wrapping_sub(1));
                let encodable = last.is_some_and(|l| l & !PADDR_MASK & !0xFFF == 0);
                if len == 0 || (pa | len) & 0xFFF != 0 || !encodable {
                    self.bad = true;
                }
                self.pa = pa;
                self.left = len;
            }
        }
    }
}
