//! Proofs that an invalidation completed, and the stamps they are checked against.
//!
//! Memory that a device may still reach through a cached translation (a host page that was
//! mapped, a table page that was linked) may go back to its owner only after an
//! invalidation covering it completed on every unit and domain that could cache it. The
//! types here make that checkable: a [`Completed`] can only be made by a successful
//! `sync()` (inside [`crate::domain::Domain::flush_proved`], or by
//! [`Completed::domain_wide`]), it names the unit, the domain and the IOVA it covered, and
//! it carries the point in time it completed. Memory waiting for release records a
//! [`Stamp`] taken after its entries were cleared; only a proof that completed later and
//! covers its IOVA releases it (see `tracker::Held`).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::error::HwError;
use crate::invalidate::{DomainId, IotlbInvalidator};

/// The sequence number of the last completion handed out (shared by every unit: it only
/// orders events, it never decides coverage alone).
static LAST_COMPLETION: AtomicU64 = AtomicU64::new(0);

/// A point in the order of invalidation completions. Taken after entries were cleared,
/// so that only an invalidation completing later can cover them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

impl Stamp {
    /// Before every completion.
    pub(crate) const NEVER: Stamp = Stamp(0);

    /// Now: every completion handed out from here on is later than this stamp.
    pub fn now() -> Stamp {
        Stamp(LAST_COMPLETION.load(Ordering::SeqCst))
    }
}

/// What a completed invalidation covered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Covers {
    /// Every translation of the domain.
    Domain,
    /// These IOVA ranges (sorted, merged, half-open).
    Ranges(Vec<(u64, u64)>),
}

/// Proof that an invalidation of `domain` on unit `unit` completed after some point in
/// time, covering part or all of its IOVA space. Neither `Clone` nor constructible
/// outside this crate except through a real completion.
#[derive(Debug, PartialEq, Eq)]
pub struct Completed {
    unit: usize,
    domain: DomainId,
    seq: u64,
    covers: Covers,
}

impl Completed {
    /// Made right after a successful `sync()` that waited for invalidations of `ranges`
    /// (or of the whole domain when `None`).
    pub(crate) fn after_sync(
        unit: usize,
        domain: DomainId,
        ranges: Option<Vec<(u64, u64)>>,
    ) -> Self {
        let seq = LAST_COMPLETION.fetch_add(1, Ordering::SeqCst) + 1;
        let covers = match ranges {
            None => Covers::Domain,
            Some(mut r) => {
                r.sort_unstable();
                let mut merged: Vec<(u64, u64)> = Vec::with_capacity(r.len());
                for (s, e) in r {
                    match merged.last_mut() {
                        Some(last) if s <= last.1 => last.1 = last.1.max(e),
                        _ => merged.push((s, e)),
                    }
                }
                Covers::Ranges(merged)
            }
        };
        Self { unit, domain, seq, covers }
    }

    /// Invalidates everything `domain` may have cached on `inv` (unit number `unit`) and
    /// waits: works whether or not a `Domain` object for it still exists.
    pub fn domain_wide(
        inv: &mut dyn IotlbInvalidator,
        unit: usize,
        domain: DomainId,
    ) -> Result<Self, HwError> {
        inv.invalidate_domain(domain)?;
        inv.sync()?;
        Ok(Self::after_sync(unit, domain, None))
    }

    /// When it completed, if it invalidated every translation of `domain` on `unit`
    /// (not just ranges of it): what a domain keeps of its latest domain-wide flush.
    pub(crate) fn domain_wide_at(&self, unit: usize, domain: DomainId) -> Option<Stamp> {
        (self.unit == unit && self.domain == domain && self.covers == Covers::Domain)
            .then_some(Stamp(self.seq))
    }

    /// The unit number this proof is for.
    pub fn unit(&self) -> usize {
        self.unit
    }

    /// The domain this proof is for.
    pub fn domain(&self) -> DomainId {
        self.domain
    }

    /// True when this completion is for `domain` on `unit`, came after `after`, and
    /// covered all of `[start, end)`.
    pub fn covers(
        &self,
        unit: usize,
        domain: DomainId,
        after: Stamp,
        start: u64,
        end: u64,
    ) -> bool {
        if self.unit != unit || self.domain != domain || self.seq <= after.0 {
            return false;
        }
        match &self.covers {
            Covers::Domain => true,
            Covers::Ranges(r) => {
                if start >= end {
                    return true;
                }
                // The merged range holding `start` must reach `end`.
                let i = r.partition_point(|&(_, e)| e <= start);
                r.get(i).is_some_and(|&(s, e)| s <= start && e >= end)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_covers_only_its_domain_its_ranges_and_what_came_before_it() {
        let before = Stamp::now();
        let p = Completed::after_sync(0, 3, Some(alloc::vec![(0x3000, 0x5000), (0x1000, 0x3000)]));
        assert!(p.covers(0, 3, before, 0x1000, 0x5000), "merged ranges");
        assert!(!p.covers(0, 3, before, 0x1000, 0x6000), "beyond the ranges");
        assert!(!p.covers(1, 3, before, 0x1000, 0x2000), "other unit");
        assert!(!p.covers(0, 4, before, 0x1000, 0x2000), "other domain");
        let later = Stamp::now();
        assert!(!p.covers(0, 3, later, 0x1000, 0x2000), "pages cleared after it completed");
        let w = Completed::after_sync(0, 3, None);
        assert!(w.covers(0, 3, later, 0, u64::MAX));
    }
}
