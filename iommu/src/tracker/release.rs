//! Host pages waiting for the invalidations that cover them.
//!
//! A [`Held`] records which IOVA its pages were mapped at and, for every domain that
//! could translate them, a [`Stamp`] taken after that domain's entries were cleared. The
//! only way a page leaves it is [`Held::release`], which checks that for every such
//! domain a [`Completed`] proof came later and covers all of that IOVA: an early release
//! cannot be written, on the success path or on any failure path.
//!
//! The pages are either extents (mappings no table holds) or the unmap's own leaves:
//! subtrees unlinked intact and leaves cleared in place ([`Detached`]), read once the
//! proof is there, so the default teardown keeps no second copy of what the tables say.

use alloc::vec::Vec;

use crate::completed::{Completed, Stamp};
use crate::invalidate::DomainId;
use crate::pgtable::{drain_subtree, Detached, PteFormat, TableMemory};
use crate::platform::PhysAddr;

/// A physically contiguous piece of host memory backing a DMA mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostExtent {
    /// First physical address (4 KiB aligned).
    pub paddr: PhysAddr,
    /// Length in bytes (a multiple of 4 KiB).
    pub len: u64,
}

/// One domain that may still cache translations of held pages, and since when its
/// entries are clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    /// The caller's unit number of the domain.
    pub unit: usize,
    /// The domain id.
    pub domain: DomainId,
    /// Taken after the domain's entries for the held IOVA were cleared.
    pub after: Stamp,
}

/// Unmapped host pages (and the detached tables that name them) that some IOTLB or
/// page-walk cache may still reach.
#[derive(Debug)]
pub struct Held<F: PteFormat> {
    /// Whole mappings' extents, moved here rather than copied.
    batches: Vec<Vec<HostExtent>>,
    /// Pages still named by detached tables, in the format they were written in.
    kept: Vec<(F, Detached)>,
    /// IOVA ranges (half-open) the pages were mapped at.
    iova: Vec<(u64, u64)>,
    owed: Vec<Owed>,
}

impl<F: PteFormat> Default for Held<F> {
    fn default() -> Self {
        Self { batches: Vec::new(), kept: Vec::new(), iova: Vec::new(), owed: Vec::new() }
    }
}

impl<F: PteFormat> Held<F> {
    /// Adds the IOVA `[start, end)` the held pages were mapped at.
    pub fn push_iova(&mut self, start: u64, end: u64) {
        match self.iova.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.iova.push((start, end)),
        }
    }

    /// Adds pages that were mapped at `[start, end)`.
    pub fn push_pages(&mut self, start: u64, end: u64, pages: Vec<HostExtent>) {
        self.push_iova(start, end);
        if !pages.is_empty() {
            self.batches.push(pages);
        }
    }

    /// Adds what an unmap detached from tables in `format` (its IOVA added separately).
    pub fn push_detached(&mut self, format: &F, kept: Detached) {
        if !kept.is_empty() {
            self.kept.push((format.clone(), kept));
        }
    }

    /// Records that `domain` on `unit` may cache the pages until an invalidation that
    /// completes after now. Call right after that domain's entries were cleared.
    pub fn owe_from_now(&mut self, unit: usize, domain: DomainId) {
        self.owe(Owed { unit, domain, after: Stamp::now() });
    }

    /// Records one more obligation (kept if one for the same domain is already there:
    /// both must be met).
    pub fn owe(&mut self, owed: Owed) {
        if !self.owed.contains(&owed) {
            self.owed.push(owed);
        }
    }

    /// What must be invalidated before release.
    pub fn owed(&self) -> &[Owed] {
        &self.owed
    }

    /// Bytes of host memory held as extents (pages still named by detached tables are
    /// counted by [`Held::table_pages`]).
    pub fn bytes(&self) -> u64 {
        let leaves: u64 = self.kept.iter().flat_map(|(_, k)| &k.leaves).map(|l| l.1).sum();
        self.batches.iter().flatten().map(|e| e.len).sum::<u64>() + leaves
    }

    /// Detached table pages held (freed at release, after the pages they name).
    pub fn table_pages(&self) -> usize {
        self.kept.iter().map(|(_, k)| k.subtrees.len()).sum()
    }

    /// Bytes of bookkeeping this record uses.
    pub fn bookkeeping_bytes(&self) -> u64 {
        let batches: usize = self.batches.iter().map(Vec::capacity).sum();
        let kept: u64 = self.kept.iter().map(|(_, k)| k.bytes()).sum();
        16 * (batches + self.iova.capacity()) as u64 + kept
    }

    /// True when `proofs` meet every obligation for all of the held IOVA.
    pub fn is_covered(&self, proofs: &[Completed]) -> bool {
        self.owed.iter().all(|o| {
            self.iova
                .iter()
                .all(|&(s, e)| proofs.iter().any(|p| p.covers(o.unit, o.domain, o.after, s, e)))
        })
    }

    /// Hands every page to `release` (and frees the detached tables after reading them)
    /// if `proofs` cover them in every domain that may cache them; otherwise hands them
    /// back untouched. Returns the table entries read.
    pub fn release<M: TableMemory>(
        self,
        proofs: &[Completed],
        mem: &mut M,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<u64, Held<F>> {
        if !self.is_covered(proofs) {
            return Err(self);
        }
        for batch in self.batches {
            for page in batch {
                release(page);
            }
        }
        let mut reads = 0;
        let mut sink = |paddr, len| release(HostExtent { paddr, len });
        for (format, kept) in self.kept {
            for (paddr, len) in kept.leaves {
                sink(paddr, len);
            }
            let mut run = None;
            for (table, level) in kept.subtrees {
                reads += drain_subtree(&format, mem, table, level, &mut run, &mut sink);
            }
            if let Some((paddr, len)) = run {
                sink(paddr, len);
            }
        }
        Ok(reads)
    }
}
