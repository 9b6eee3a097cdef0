//! The format-independent page-table engine: the table itself, its range checks and
//! translation. Mapping (with its rollback) and unmapping live in the submodules.

use core::cell::Cell;

use super::{level_index, MapError, Pte, PteFormat, TableMemory, ENTRIES};
use crate::platform::PhysAddr;

mod map;
mod unmap;

pub use unmap::{drain_subtree, Detached};

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

    /// Bytes of IOVA space this table translates (all of it, less the last byte, when
    /// the depth names 64 bits or more: AMD-Vi's 6-level mode).
    pub fn aperture(&self) -> u64 {
        1u64.checked_shl(self.format.address_bits()).unwrap_or(u64::MAX)
    }

    /// Reads entry `idx` of `table`, counting the step.
    pub(super) fn read<M: TableMemory>(&self, mem: &M, table: PhysAddr, idx: usize) -> u64 {
        self.walk_steps.set(self.walk_steps.get() + 1);
        mem.read_u64(table + 8 * idx as u64)
    }

    /// The first of the `n` entries from `idx` of `table` in use, counting the steps.
    pub(super) fn first_used<M: TableMemory>(
        &self,
        mem: &M,
        table: PhysAddr,
        idx: usize,
        n: usize,
    ) -> Option<usize> {
        self.walk_steps.set(self.walk_steps.get() + n as u64);
        mem.first_nonzero(table + 8 * idx as u64, n)
    }

    /// The end of `[iova, iova + size)` if it is aligned, nonempty and in the aperture.
    pub(super) fn check_range(&self, iova: u64, size: u64) -> Result<u64, MapError> {
        let end = iova.checked_add(size).ok_or(MapError::BadRange)?;
        if size == 0 || (iova | size) & 0xFFF != 0 || end > self.aperture() {
            return Err(MapError::BadRange);
        }
        Ok(end)
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
    /// the IOTLB was invalidated: reached only through `Domain::destroy`, which holds
    /// the proof.
    pub(crate) fn destroy<M: TableMemory>(mut self, mem: &mut M) {
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
