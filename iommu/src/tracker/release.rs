//! Host pages waiting for the invalidations that cover them.
//!
//! A [`Held`] records which IOVA its pages were mapped at and, for every domain that
//! could translate them, a [`Stamp`] taken after that domain's entries were cleared. The
//! only way a page leaves it is [`Held::release`], which checks that for every such
//! domain a [`Completed`] proof came later and covers all of that IOVA: an early release
//! cannot be written, on the success path or on any failure path.

use alloc::vec::Vec;

use crate::completed::{Completed, Stamp};
use crate::invalidate::DomainId;
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

/// Unmapped host pages that some IOTLB may still translate to.
#[derive(Debug, Default)]
pub struct Held {
    /// Whole mappings' extents, moved here rather than copied.
    batches: Vec<Vec<HostExtent>>,
    /// IOVA ranges (half-open) the pages were mapped at.
    iova: Vec<(u64, u64)>,
    owed: Vec<Owed>,
}

impl Held {
    /// Adds pages that were mapped at `[start, end)`.
    pub fn push_pages(&mut self, start: u64, end: u64, pages: Vec<HostExtent>) {
        match self.iova.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => self.iova.push((start, end)),
        }
        if !pages.is_empty() {
            self.batches.push(pages);
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

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.batches.iter().flatten().map(|e| e.len).sum()
    }

    /// Moves everything of `other` here (its obligations too).
    pub fn absorb(&mut self, mut other: Held) {
        self.batches.append(&mut other.batches);
        self.iova.append(&mut other.iova);
        for o in other.owed {
            self.owe(o);
        }
    }

    /// True when `proofs` meet every obligation for all of the held IOVA.
    pub fn is_covered(&self, proofs: &[Completed]) -> bool {
        self.owed.iter().all(|o| {
            self.iova
                .iter()
                .all(|&(s, e)| proofs.iter().any(|p| p.covers(o.unit, o.domain, o.after, s, e)))
        })
    }

    /// Hands every page to `release` if `proofs` cover them in every domain that may
    /// cache them; otherwise hands the pages back untouched.
    pub fn release(
        self,
        proofs: &[Completed],
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), Held> {
        if !self.is_covered(proofs) {
            return Err(self);
        }
        for batch in self.batches {
            for page in batch {
                release(page);
            }
        }
        Ok(())
    }
}
