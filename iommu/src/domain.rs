//! The domain API: one IOMMU address space on one unit, with an invalidation gather.
//!
//! Unmaps only collect what the IOTLB must forget; [`Domain::flush`] turns the gathered
//! ranges into naturally aligned power-of-two [`IovaBlock`]s (or one domain-wide
//! invalidation past [`DOMAIN_FLUSH_THRESHOLD`] blocks), waits for them, and only then
//! frees the table pages that unmap emptied.

use alloc::vec::Vec;

use crate::completed::{Completed, Stamp};
use crate::error::HwError;
use crate::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use crate::pgtable::{Detached, MapError, PageTable, Prot, PteFormat, TableMemory, Unmapped};
use crate::platform::PhysAddr;

/// More page-selective blocks than this in one flush become one domain invalidation.
pub const DOMAIN_FLUSH_THRESHOLD: usize = 64;

/// What unmaps left for the IOTLB to forget, and the table pages to free afterwards.
#[derive(Debug, Default)]
pub struct IotlbGather {
    ranges: Vec<(u64, u64)>,
    freed_tables: Vec<PhysAddr>,
    /// One invalidation command per unmapped region (Linux's per-unmap range flush),
    /// instead of merged aligned blocks.
    per_region: bool,
    /// One domain-wide invalidation whatever was gathered (a teardown of everything).
    whole_domain: bool,
}

impl IotlbGather {
    /// An empty gather.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty gather whose flush issues one command per region, each the smallest
    /// aligned block covering it (or a domain-wide one past the unit's largest block):
    /// how Linux drivers flush each `unmap_fast` region; only the benchmark's
    /// `linux-2018` baseline uses it.
    pub fn per_region() -> Self {
        Self { per_region: true, ..Self::default() }
    }

    /// An empty gather whose flush invalidates the whole domain, even when nothing was
    /// gathered: one command for a teardown of every mapping, and the domain-wide proof
    /// [`Domain::destroy`] needs.
    pub fn whole_domain() -> Self {
        Self { whole_domain: true, ..Self::default() }
    }

    /// True when nothing waits for a flush.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.freed_tables.is_empty()
    }

    /// Bytes of bookkeeping the gather holds (ranges and table pages to free).
    pub fn bookkeeping_bytes(&self) -> u64 {
        (16 * self.ranges.capacity() + 8 * self.freed_tables.capacity()) as u64
    }

    /// Records `[start, end)` as needing invalidation, merging with the last range when
    /// they touch (unmaps usually go in IOVA order).
    pub fn add_range(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            let meets = if self.per_region {
                start < last.1 && end > last.0
            } else {
                start <= last.1 && end >= last.0
            };
            if meets {
                *last = (last.0.min(start), last.1.max(end));
                return;
            }
        }
        self.ranges.push((start, end));
    }

    /// The gathered ranges as naturally aligned blocks of at most `2^max_order` bytes.
    pub fn blocks(&self, max_order: u32) -> Vec<IovaBlock> {
        let mut ranges = self.ranges.clone();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut blocks = Vec::new();
        for (mut s, e) in merged {
            while s < e {
                let align = s.trailing_zeros().min(63);
                let fit = 63 - (e - s).leading_zeros();
                let order = align.min(fit).min(max_order).max(12);
                blocks.push(IovaBlock { iova: s, order });
                s += 1u64 << order;
            }
        }
        blocks
    }
}

/// Invalidations one flush issued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Page-selective block invalidations.
    pub blocks: u64,
    /// Domain-wide invalidations.
    pub domain_wide: u64,
}

impl FlushStats {
    /// Every invalidation command issued.
    pub fn total(&self) -> u64 {
        self.blocks + self.domain_wide
    }
}

/// IOVA windows no domain maps, `[start, end)`: a device's request there is not DMA.
/// 0xFEE0_0000-0xFEEF_FFFF is the interrupt window (VT-d and AMD-Vi take writes there as
/// interrupt requests, never translated; the window is reserved up to 0xFF00_0000 as the
/// fgsp probe's default keeps it); 0xFD_0000_0000-0xFF_FFFF_FFFF is AMD's HyperTransport
/// range (interrupts, system management, configuration), which Linux reserves too. Both
/// are reserved on both vendors: guest RAM (at most 3 GiB from guest-physical 0) and every
/// test IOVA lie elsewhere.
pub const RESERVED_IOVA: [(u64, u64); 2] =
    [(0xFEE0_0000, 0xFF00_0000), (0xFD_0000_0000, 0x100_0000_0000)];

/// Refuses a range that overlaps a [`RESERVED_IOVA`] window: every way of mapping into a
/// domain goes through this one check.
fn refuse_reserved(iova: u64, size: u64) -> Result<(), MapError> {
    let end = iova.checked_add(size).ok_or(MapError::BadRange)?;
    match RESERVED_IOVA.iter().find(|(s, e)| iova < *e && *s < end) {
        Some(&(window, _)) => Err(MapError::Reserved { window }),
        None => Ok(()),
    }
}

/// One IOMMU address space on one remapping unit.
#[derive(Debug)]
pub struct Domain<F: PteFormat> {
    id: DomainId,
    unit: usize,
    table: PageTable<F>,
    fgsp: bool,
    /// Taken after the last change to the tables (map, unmap, deferred work).
    changed: Stamp,
    /// When the latest domain-wide invalidation of this domain completed (set only from
    /// a real completion): [`Domain::destroy`] frees the tables only when it is later
    /// than `changed`.
    whole_flush: Stamp,
}

/// A [`Domain::destroy`] refused: no domain-wide invalidation completed after the last
/// change to its tables. The domain comes back untouched (retire it, or leak it).
#[derive(Debug)]
pub struct NotRetired<F: PteFormat>(pub Domain<F>);

impl<F: PteFormat> Domain<F> {
    /// An empty domain `id` on the caller's unit number `unit`, tables in `format`.
    pub fn new<M: TableMemory>(
        mem: &mut M,
        id: DomainId,
        unit: usize,
        format: F,
    ) -> Result<Self, MapError> {
        Ok(Self {
            id,
            unit,
            table: PageTable::new(mem, format)?,
            fgsp: false,
            changed: Stamp::now(),
            whole_flush: Stamp::NEVER,
        })
    }

    /// Keeps only the page sizes in `mask` (bit n = 2^n bytes; 4 KiB always stays).
    pub fn with_page_sizes(mut self, mask: u64) -> Self {
        self.table.restrict_page_sizes(mask);
        self
    }

    /// The domain id the hardware tags its IOTLB entries with.
    pub fn id(&self) -> DomainId {
        self.id
    }

    /// The caller's number for the unit this domain lives on.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// Top-level table address for the context entry / DTE.
    pub fn root(&self) -> PhysAddr {
        self.table.root()
    }

    /// Table depth: VT-d AW = levels - 2, AMD-Vi DTE Mode = levels.
    pub fn levels(&self) -> u32 {
        self.table.levels()
    }

    /// Page sizes map uses (bit n = 2^n bytes).
    pub fn page_sizes(&self) -> u64 {
        self.table.page_sizes()
    }

    /// True when unmapping part of a page returns the whole fine-grained page (AMD-Vi v1
    /// NextLevel-7 pages); set by the tracker's probe at attach.
    pub fn fgsp(&self) -> bool {
        self.fgsp
    }

    /// Records the probe's finding.
    pub fn set_fgsp(&mut self, fgsp: bool) {
        self.fgsp = fgsp;
    }

    /// The page table itself (for walks and statistics).
    pub fn table(&self) -> &PageTable<F> {
        &self.table
    }

    /// Maps `[iova, iova + size)` to `paddr..` with the largest pages allowed.
    pub fn map<M: TableMemory>(
        &mut self,
        mem: &mut M,
        iova: u64,
        paddr: PhysAddr,
        size: u64,
        prot: Prot,
    ) -> Result<(), MapError> {
        refuse_reserved(iova, size)?;
        let result = self.table.map(mem, iova, paddr, size, prot);
        self.changed = Stamp::now();
        result
    }

    /// Maps `[iova, iova + size)` onto the physical `pieces` in order, in one walk (see
    /// `PageTable::map_pieces`).
    pub fn map_pieces<M: TableMemory>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        pieces: &mut dyn Iterator<Item = (PhysAddr, u64)>,
        prot: Prot,
    ) -> Result<(), MapError> {
        refuse_reserved(iova, size)?;
        let result = self.table.map_pieces(mem, iova, size, pieces, prot);
        self.changed = Stamp::now();
        result
    }

    /// Unmaps the pages intersecting `[iova, iova + size)` and gathers their invalidation.
    /// Nothing is freed until [`Domain::flush`].
    pub fn unmap<M: TableMemory>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        gather: &mut IotlbGather,
    ) -> Result<Unmapped, MapError> {
        let done = self.table.unmap(mem, iova, size, &mut gather.freed_tables);
        self.changed = Stamp::now();
        let done = done?;
        gather.add_range(done.iova, done.iova + done.size);
        Ok(done)
    }

    /// As [`Domain::unmap`], but whole subtrees are kept intact in `kept` (and leaves
    /// cleared in place recorded there) so the host pages can be released from the
    /// leaves once the invalidation completed (see `tracker::Held`).
    pub fn unmap_keeping<M: TableMemory>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        gather: &mut IotlbGather,
        kept: &mut Detached,
    ) -> Result<Unmapped, MapError> {
        let done = self.table.unmap_keeping(mem, iova, size, &mut gather.freed_tables, kept);
        self.changed = Stamp::now();
        let done = done?;
        gather.add_range(done.iova, done.iova + done.size);
        Ok(done)
    }

    /// Where `iova` translates to now (the tables, not any IOTLB).
    pub fn iova_to_phys<M: TableMemory>(&self, mem: &M, iova: u64) -> Option<PhysAddr> {
        self.table.iova_to_phys(mem, iova)
    }

    /// Keeps a gather whose flush failed (its ranges and table pages) for the next flush,
    /// so its tables are neither leaked nor freed before an invalidation covers them.
    pub fn defer(&mut self, mut gather: IotlbGather) {
        for (start, end) in gather.ranges.drain(..) {
            self.table.defer_invalidation(start, end, &mut gather.freed_tables);
        }
        self.table.defer_invalidation(0, 0, &mut gather.freed_tables);
        self.changed = Stamp::now();
    }

    /// Invalidates what `gather` collected (plus what failed maps and deferred flushes
    /// left), waits for completion, then frees its table pages. On error the gather keeps
    /// everything so the flush can be retried (or [`Domain::defer`]red).
    pub fn flush<M: TableMemory>(
        &mut self,
        mem: &mut M,
        gather: &mut IotlbGather,
        inv: &mut dyn IotlbInvalidator,
    ) -> Result<FlushStats, HwError> {
        self.flush_proved(mem, gather, inv).map(|(stats, _)| stats)
    }

    /// [`Domain::flush`], also returning the proof of what the completed invalidation
    /// covered: the only way, with [`Completed::domain_wide`], to release host pages.
    pub fn flush_proved<M: TableMemory>(
        &mut self,
        mem: &mut M,
        gather: &mut IotlbGather,
        inv: &mut dyn IotlbInvalidator,
    ) -> Result<(FlushStats, Completed), HwError> {
        let mut stats = FlushStats::default();
        let rolled_back = self.table.take_rolled_back(&mut gather.freed_tables);
        gather.add_range(rolled_back.iova, rolled_back.iova + rolled_back.size);
        if gather.is_empty() && !gather.whole_domain {
            return Ok((stats, Completed::after_sync(self.unit, self.id, Some(Vec::new()))));
        }
        let max_order = inv.max_block_order().max(12);
        let blocks = if gather.per_region {
            gather.ranges.iter().map(|&(s, e)| IovaBlock::covering(s, e - s)).collect()
        } else {
            gather.blocks(max_order)
        };
        let domain_wide = if gather.whole_domain {
            true
        } else if gather.per_region {
            blocks.iter().any(|b: &IovaBlock| b.order > max_order) || blocks.is_empty()
        } else {
            blocks.len() > DOMAIN_FLUSH_THRESHOLD
                || (!gather.freed_tables.is_empty() && blocks.is_empty())
        };
        if domain_wide {
            inv.invalidate_domain(self.id)?;
            stats.domain_wide = 1;
        } else {
            for block in blocks {
                inv.invalidate_block(self.id, block)?;
                stats.blocks += 1;
            }
        }
        inv.sync()?;
        let ranges = core::mem::take(&mut gather.ranges);
        let proof = Completed::after_sync(self.unit, self.id, (!domain_wide).then_some(ranges));
        if let Some(at) = proof.domain_wide_at(self.unit, self.id) {
            self.whole_flush = at;
        }
        for frame in gather.freed_tables.drain(..) {
            mem.free_frame(frame);
        }
        Ok((stats, proof))
    }

    /// Invalidates everything the unit may cache for this domain (with what failed
    /// maps and flushes deferred) and waits: the proof [`Domain::destroy`] needs. Call it
    /// once no device reaches the domain any more (every device blocked or moved).
    pub fn retire<M: TableMemory>(
        &mut self,
        mem: &mut M,
        inv: &mut dyn IotlbInvalidator,
    ) -> Result<(), HwError> {
        let mut gather = IotlbGather::whole_domain();
        self.flush_proved(mem, &mut gather, inv).map(|_| ())
    }

    /// True when a domain-wide invalidation completed after the last change to the
    /// tables, so [`Domain::destroy`] will free them.
    pub fn is_retired(&self) -> bool {
        self.whole_flush > self.changed
    }

    /// Frees every table page, the root included, and only under a domain-wide
    /// invalidation that completed after the last change to the tables (see
    /// [`Domain::retire`]; the tracker's teardown ends with one): otherwise the domain
    /// comes back in [`NotRetired`] and nothing is freed. The caller's part is the order:
    /// its devices were blocked before that invalidation.
    pub fn destroy<M: TableMemory>(self, mem: &mut M) -> Result<(), NotRetired<F>> {
        if !self.is_retired() {
            return Err(NotRetired(self));
        }
        self.table.destroy(mem);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
