//! The format-independent page-table engine: map, unmap, iova-to-phys, leaf runs.

use core::cell::Cell;

use super::{level_index, level_shift, MapError, Prot, Pte, PteFormat, TableMemory, ENTRIES};
use crate::platform::PhysAddr;

/// What an unmap really removed: the smallest span covering every page it cleared.
/// It can start before and end after the request when the request hit part of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unmapped {
    /// First IOVA of the span.
    pub iova: u64,
    /// Bytes in the span (0: nothing was mapped there).
    pub size: u64,
}

impl Unmapped {
    fn cover(&mut self, start: u64, end: u64) {
        if self.size == 0 {
            *self = Unmapped { iova: start, size: end - start };
        } else {
            let lo = self.iova.min(start);
            let hi = (self.iova + self.size).max(end);
            *self = Unmapped { iova: lo, size: hi - lo };
        }
    }
}

/// Which entries of one table were written, so they are flushed once for the device.
struct Dirty {
    table: PhysAddr,
    lo: usize,
    hi: usize,
}

impl Dirty {
    fn new(table: PhysAddr) -> Self {
        Dirty { table, lo: ENTRIES, hi: 0 }
    }
    fn mark(&mut self, first: usize, count: usize) {
        self.lo = self.lo.min(first);
        self.hi = self.hi.max(first + count);
    }
    fn flush<M: TableMemory>(&self, mem: &mut M) {
        if self.lo < self.hi {
            let addr = self.table + 8 * self.lo as u64;
            mem.flush_for_device(addr, 8 * (self.hi - self.lo) as u64);
        }
    }
}

/// One IOMMU address space's page table, in the format `F`.
#[derive(Debug)]
pub struct PageTable<F: PteFormat> {
    format: F,
    root: PhysAddr,
    page_sizes: u64,
    walk_steps: Cell<u64>,
    /// Table pages failed maps unlinked: freed only after an invalidation of `rolled_back`.
    unlinked: alloc::vec::Vec<PhysAddr>,
    /// The IOVA span failed maps briefly touched (leaves and tables the IOTLB may hold).
    rolled_back: Unmapped,
}

impl<F: PteFormat> PageTable<F> {
    /// A new, empty table whose root comes from `mem`.
    pub fn new<M: TableMemory>(mem: &mut M, format: F) -> Result<Self, MapError> {
        let root = alloc_table(mem)?;
        let page_sizes = format.page_sizes();
        Ok(Self {
            format,
            root,
            page_sizes,
            walk_steps: Cell::new(0),
            unlinked: alloc::vec::Vec::new(),
            rolled_back: Unmapped::default(),
        })
    }

    /// Physical address of the top-level table (VT-d context entry SLPTPTR, AMD-Vi DTE
    /// root pointer).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Number of levels (VT-d AW = levels - 2; AMD-Vi DTE Mode = levels).
    pub fn levels(&self) -> u32 {
        self.format.levels()
    }

    /// The format this table is written in.
    pub fn format(&self) -> &F {
        &self.format
    }

    /// Page sizes map may use (bit n = 2^n bytes).
    pub fn page_sizes(&self) -> u64 {
        self.page_sizes
    }

    /// Restricts the page sizes map may use to `mask` (4 KiB is always kept).
    pub fn restrict_page_sizes(&mut self, mask: u64) {
        self.page_sizes = (self.format.page_sizes() & mask) | (1 << 12);
    }

    /// Table entries read so far (the cost measure of the benchmark).
    pub fn walk_steps(&self) -> u64 {
        self.walk_steps.get()
    }

    /// Bytes of IOVA space this table translates.
    pub fn aperture(&self) -> u64 {
        1u64 << self.format.address_bits()
    }

    /// Reads entry `idx` of `table`, counting the step.
    pub(super) fn read<M: TableMemory>(&self, mem: &M, table: PhysAddr, idx: usize) -> u64 {
        self.walk_steps.set(self.walk_steps.get() + 1);
        mem.read_u64(table + 8 * idx as u64)
    }

    /// The end of `[iova, iova + size)` if it is aligned, nonempty and in the aperture.
    pub(super) fn check_range(&self, iova: u64, size: u64) -> Result<u64, MapError> {
        let end = iova.checked_add(size).ok_or(MapError::BadRange)?;
        if size == 0 || (iova | size) & 0xFFF != 0 || end > self.aperture() {
            return Err(MapError::BadRange);
        }
        Ok(end)
    }

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
        let end = self.check_range(iova, size)?;
        if prot.is_empty() {
            return Err(MapError::NoAccess);
        }
        let last = paddr.checked_add(size - 1).ok_or(MapError::BadRange)?;
        if paddr & 0xFFF != 0 || last & !super::PADDR_MASK & !0xFFF != 0 {
            return Err(MapError::BadRange);
        }
        let mut va = iova;
        let mut pa = paddr;
        let mut unlinked = core::mem::take(&mut self.unlinked);
        let result =
            self.map_in(mem, self.root, self.levels(), &mut va, end, &mut pa, prot, &mut unlinked);
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

    #[allow(clippy::too_many_arguments)]
    fn map_in<M: TableMemory>(
        &mut self,
        mem: &mut M,
        table: PhysAddr,
        level: u32,
        va: &mut u64,
        end: u64,
        pa: &mut u64,
        prot: Prot,
        unlinked: &mut alloc::vec::Vec<PhysAddr>,
    ) -> Result<(), MapError> {
        let shift = level_shift(level);
        let mut dirty = Dirty::new(table);
        let result = (|| {
            while *va < end {
                let idx = level_index(*va, level);
                let order = self.best_order(*va, *pa, end - *va);
                if order >= shift {
                    let count = 1usize << (order - shift);
                    for i in idx..idx + count {
                        if self.read(mem, table, i) != 0 {
                            return Err(MapError::AlreadyMapped { iova: *va });
                        }
                    }
                    let pte = self.format.leaf_entry(*pa, level, order, prot);
                    for i in idx..idx + count {
                        mem.write_u64(table + 8 * i as u64, pte);
                    }
                    dirty.mark(idx, count);
                    *va += 1 << order;
                    *pa += 1 << order;
                } else {
                    let raw = self.read(mem, table, idx);
                    let (child, created) = match self.format.decode(raw, level) {
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
                    let sub = self.map_in(mem, child, level - 1, va, sub_end, pa, prot, unlinked);
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
    fn unmap_in<M: TableMemory>(
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
    fn collect_tables<M: TableMemory>(
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

    /// The physical address `iova` translates to, if mapped.
    pub fn iova_to_phys<M: TableMemory>(&self, mem: &M, iova: u64) -> Option<PhysAddr> {
        if iova >= self.aperture() {
            return None;
        }
        let mut table = self.root;
        let mut level = self.levels();
        loop {
            match self.format.decode(self.read(mem, table, level_index(iova, level)), level) {
                Pte::Empty => return None,
                Pte::Leaf { paddr, order, .. } => {
                    return Some(paddr + (iova & ((1u64 << order) - 1)))
                }
                Pte::Table(next) if level > 1 => {
                    table = next;
                    level -= 1;
                }
                Pte::Table(_) => return None,
            }
        }
    }

    /// Frees every table page, the root included. Only once no device can walk it and
    /// the IOTLB was invalidated.
    pub fn destroy<M: TableMemory>(mut self, mem: &mut M) {
        let mut all = core::mem::take(&mut self.unlinked);
        self.collect_tables(mem, self.root, self.levels(), &mut all);
        for frame in all {
            mem.free_frame(frame);
        }
    }
}

fn alloc_table<M: TableMemory>(mem: &mut M) -> Result<PhysAddr, MapError> {
    let frame = mem.alloc_zeroed_frame().ok_or(MapError::OutOfMemory)?;
    mem.flush_for_device(frame, crate::platform::PAGE_SIZE);
    Ok(frame)
}
