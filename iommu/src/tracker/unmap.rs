//! unmap_dma and teardown under each [`UnmapStrategy`].
//!
//! Every path ends in [`Held::release`]: pages are handed out only when proofs of
//! completed invalidations cover them in every domain that mapped them; whatever is not
//! covered (a flush failed) is quarantined for [`DmaTracker::retry_release`]. While a
//! domain is attached the tracker keeps no record of the host pages: the first domain's
//! unmap detaches its subtrees intact and the pages are read from those leaves after the
//! invalidation (`Domain::unmap_keeping`).

use alloc::vec::Vec;

use super::{
    DmaTracker, Held, HostExtent, InvalidatorSet, Mapping, Owed, TrackerCounters, TrackerError,
    UnmapStrategy,
};
use crate::completed::Completed;
use crate::domain::{Domain, IotlbGather};
use crate::error::HwError;
use crate::invalidate::IotlbInvalidator;
use crate::pgtable::{Detached, PteFormat, TableMemory};
use crate::platform::PAGE_SIZE;

/// Walks a recorded mapping's host extents in IOVA order (mappings no table holds).
struct ExtentCursor {
    extents: Vec<HostExtent>,
    idx: usize,
    off: u64,
}

impl ExtentCursor {
    fn new(extents: Vec<HostExtent>) -> Self {
        Self { extents, idx: 0, off: 0 }
    }

    /// The host memory behind the next `len` bytes of IOVA.
    fn take(&mut self, mut len: u64) -> Vec<HostExtent> {
        let mut out = Vec::new();
        while len > 0 && self.idx < self.extents.len() {
            let e = self.extents[self.idx];
            let n = (e.len - self.off).min(len);
            out.push(HostExtent { paddr: e.paddr + self.off, len: n });
            len -= n;
            self.off += n;
            if self.off == e.len {
                self.idx += 1;
                self.off = 0;
            }
        }
        out
    }
}

/// Flushes `gather` on `domain` and counts it; a failed gather is deferred to the
/// domain's next flush (its tables are neither leaked nor freed early).
fn flush_counted<F: PteFormat, M: TableMemory>(
    domain: &mut Domain<F>,
    mem: &mut M,
    mut gather: IotlbGather,
    inv: &mut dyn IotlbInvalidator,
    counters: &mut TrackerCounters,
) -> Result<Completed, HwError> {
    match domain.flush_proved(mem, &mut gather, inv) {
        Ok((stats, proof)) => {
            counters.invalidations += stats.total();
            counters.syncs += 1;
            Ok(proof)
        }
        Err(e) => {
            domain.defer(gather);
            Err(e)
        }
    }
}

/// Unmaps `[iova, iova + size)` from `d`; when `keep` (no record holds these pages), the
/// pages stay readable in `kept` for release after the flush.
#[allow(clippy::too_many_arguments)]
fn unmap_one<F: PteFormat, M: TableMemory>(
    d: &mut Domain<F>,
    mem: &mut M,
    iova: u64,
    size: u64,
    keep: bool,
    gather: &mut IotlbGather,
    kept: &mut Detached,
) -> Option<crate::pgtable::Unmapped> {
    // Cannot fail on a range accepted at map time; if it did, its pages would simply
    // not be covered by the flush and stay quarantined.
    let done = if keep {
        d.unmap_keeping(mem, iova, size, gather, kept)
    } else {
        d.unmap(mem, iova, size, gather)
    };
    // All of the range is invalidated, even where nothing was mapped (a failed detach
    // already cleared this domain): the held pages' IOVA is then covered in every domain.
    gather.add_range(iova, iova + size);
    done.ok()
}

impl<F: PteFormat> DmaTracker<F> {
    /// Unmaps every mapping inside `[iova, iova + size)` from every domain and releases
    /// their host pages through `release` once the covering invalidation completed.
    /// Returns the bytes unmapped. Ranges that cut a mapping are refused.
    pub fn unmap_dma<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        iova: u64,
        size: u64,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<u64, TrackerError> {
        let end = iova.checked_add(size).ok_or(TrackerError::BadRange)?;
        if let Some((&s, m)) = self.mappings.range(..iova).next_back() {
            if s + m.size > iova {
                return Err(TrackerError::SplitsMapping);
            }
        }
        if let Some((&s, m)) = self.mappings.range(iova..end).next_back() {
            if s + m.size > end {
                return Err(TrackerError::SplitsMapping);
            }
        }
        let keys: Vec<u64> = self.mappings.range(iova..end).map(|(&k, _)| k).collect();
        let taken: Vec<(u64, Mapping)> =
            keys.into_iter().filter_map(|k| self.mappings.remove(&k).map(|m| (k, m))).collect();
        let bytes = taken.iter().map(|(_, m)| m.size).sum();
        self.unmap_taken(mem, inv, taken, false, release)?;
        Ok(bytes)
    }

    /// Unmaps everything from every domain, releases every host page after the
    /// invalidations completed, and hands back the (now empty) domains for the caller
    /// to detach from hardware and `destroy`. Pages a failed flush left uncovered stay
    /// quarantined (with the domains they are owed by) for `retry_release`.
    pub fn teardown<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<Vec<Domain<F>>, TrackerError> {
        let taken: Vec<(u64, Mapping)> = core::mem::take(&mut self.mappings).into_iter().collect();
        self.unmap_taken(mem, inv, taken, true, release)?;
        // Each domain leaves retired: a domain-wide invalidation completed after its last
        // change (the default's unmap flush was one; the baselines, and work failed
        // flushes deferred, get one here), so the caller's `destroy` can free the tables.
        for d in &mut self.domains {
            if !d.is_retired() {
                let gather = IotlbGather::whole_domain();
                flush_counted(d, mem, gather, inv.unit(d.unit()), &mut self.counters)?;
            }
        }
        self.detaching.clear();
        Ok(core::mem::take(&mut self.domains))
    }

    /// Unmaps `taken` from every domain and releases what completed invalidations cover.
    fn unmap_taken<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        taken: Vec<(u64, Mapping)>,
        everything: bool,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), TrackerError> {
        let steps_before: u64 = self.domains.iter().map(|d| d.table().walk_steps()).sum();
        // The source domain (whose tables name the pages) goes first for the duration;
        // without one every mapping has its record.
        let source = self.source();
        let has_source = source.is_some();
        let source = source.unwrap_or(0);
        if !self.domains.is_empty() {
            self.domains.swap(0, source);
        }
        let result = if self.domains.is_empty() || self.strategy == UnmapStrategy::Gathered {
            self.unmap_gathered(mem, inv, taken, has_source, everything, release)
        } else {
            self.unmap_per_call(mem, inv, taken, has_source, release)
        };
        if !self.domains.is_empty() {
            self.domains.swap(0, source);
        }
        let steps_after: u64 = self.domains.iter().map(|d| d.table().walk_steps()).sum();
        self.counters.walk_steps += steps_after - steps_before;
        result
    }

    /// Releases `held` if `proofs` cover it, else quarantines it; `failed` is the first
    /// flush error of the operation, reported in preference to "not covered".
    fn settle<M: TableMemory>(
        &mut self,
        held: Held<F>,
        proofs: &[Completed],
        mem: &mut M,
        failed: Option<HwError>,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), TrackerError> {
        let uncovered = match held.release(proofs, mem, release) {
            Ok(reads) => {
                self.counters.walk_steps += reads;
                false
            }
            Err(held) => {
                self.quarantine.push(held);
                true
            }
        };
        match failed {
            Some(e) => Err(e.into()),
            None if uncovered => Err(TrackerError::Uncovered),
            None => Ok(()),
        }
    }

    /// The default: one range unmap per mapping and domain, one flush per domain, and
    /// every page released once all of them completed, read from the first domain's
    /// detached leaves (no contiguity search, no second record). `everything`: the
    /// mappings are all there is (a teardown), so each flush is one domain-wide command.
    fn unmap_gathered<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        taken: Vec<(u64, Mapping)>,
        has_source: bool,
        everything: bool,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), TrackerError> {
        let mut held = Held::default();
        for &o in &self.stale {
            held.owe(o);
        }
        let mut gathers = Vec::with_capacity(self.domains.len());
        for (i, d) in self.domains.iter_mut().enumerate() {
            let mut gather =
                if everything { IotlbGather::whole_domain() } else { IotlbGather::new() };
            let mut kept = Detached::default();
            for &(iova, ref m) in &taken {
                let keep = i == 0 && has_source && m.extents.is_empty();
                unmap_one(d, mem, iova, m.size, keep, &mut gather, &mut kept);
                self.counters.unmap_calls += 1;
            }
            held.owe_from_now(d.unit(), d.id());
            held.push_detached(d.table().format(), kept);
            gathers.push(gather);
        }
        for (iova, m) in taken {
            held.push_pages(iova, iova + m.size, m.extents);
        }
        let transient = held.bookkeeping_bytes()
            + gathers.iter().map(IotlbGather::bookkeeping_bytes).sum::<u64>();
        self.note_bookkeeping(transient);
        let mut proofs = Vec::with_capacity(gathers.len());
        let mut failed = None;
        for (d, gather) in self.domains.iter_mut().zip(gathers) {
            match flush_counted(d, mem, gather, inv.unit(d.unit()), &mut self.counters) {
                Ok(p) => proofs.push(p),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        self.settle(held, &proofs, mem, failed, release)
    }

    /// The per-call baselines: domains after the first are unmapped a mapping per call
    /// and flushed once; the first is unmapped chunk by chunk (per the strategy) with a
    /// flush per chunk, and each chunk released when it and the others' flushes cover it.
    fn unmap_per_call<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        taken: Vec<(u64, Mapping)>,
        has_source: bool,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), TrackerError> {
        let strategy = self.strategy;
        let Some((first, rest)) = self.domains.split_first_mut() else {
            return Err(TrackerError::NoSuchDomain);
        };
        let counters = &mut self.counters;
        let mut owed: Vec<Owed> = self.stale.clone();
        let mut proofs: Vec<Completed> = Vec::new();
        let mut failed = None;
        for d in rest.iter_mut() {
            let mut gather = IotlbGather::new();
            for &(iova, ref m) in &taken {
                unmap_one(d, mem, iova, m.size, false, &mut gather, &mut Detached::default());
                counters.unmap_calls += 1;
            }
            let mut one = Held::<F>::default();
            one.owe_from_now(d.unit(), d.id());
            owed.extend_from_slice(one.owed());
            match flush_counted(d, mem, gather, inv.unit(d.unit()), counters) {
                Ok(p) => proofs.push(p),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        let format = first.table().format().clone();
        let mut left: Vec<(u64, u64, ExtentCursor)> = Vec::new();
        let mut chunks = taken.into_iter();
        let mut released = Ok(());
        // Regions per completion wait: one for the per-call strategies, up to 512 for
        // vfio's unmap_unpin_fast (VFIO_IOMMU_TLB_SYNC_MAX).
        let (limit, per_region) = match strategy {
            UnmapStrategy::Linux2018 => (512, true),
            _ => (1, false),
        };
        let new_gather = || if per_region { IotlbGather::per_region() } else { IotlbGather::new() };
        let mut batch = Batch {
            gather: new_gather(),
            held: Held::default(),
            kept: Detached::default(),
            regions: 0,
        };
        'mappings: while failed.is_none() {
            let Some((iova, m)) = chunks.next() else { break };
            let end = iova + m.size;
            let keep = has_source && m.extents.is_empty();
            let mut cursor = ExtentCursor::new(m.extents);
            let mut va = iova;
            while va < end {
                let len = chunk_len(first, mem, strategy, va, end);
                let next = match unmap_one(
                    first,
                    mem,
                    va,
                    len,
                    keep,
                    &mut batch.gather,
                    &mut batch.kept,
                ) {
                    Some(done) if done.size > 0 => (done.iova + done.size).min(end),
                    _ => va + len,
                };
                counters.unmap_calls += 1;
                batch.held.push_pages(va, next, cursor.take(next - va));
                batch.regions += 1;
                va = next.max(va + PAGE_SIZE);
                let last = va >= end && chunks.len() == 0;
                if batch.regions < limit && !last {
                    continue;
                }
                let full = core::mem::replace(
                    &mut batch,
                    Batch {
                        gather: new_gather(),
                        held: Held::default(),
                        kept: Detached::default(),
                        regions: 0,
                    },
                );
                let mut held = full.held;
                for &o in &owed {
                    held.owe(o);
                }
                // After every region of the batch was cleared.
                held.owe_from_now(first.unit(), first.id());
                held.push_detached(&format, full.kept);
                match flush_counted(first, mem, full.gather, inv.unit(first.unit()), counters) {
                    Ok(p) => {
                        proofs.push(p);
                        match held.release(&proofs, mem, release) {
                            Ok(reads) => counters.walk_steps += reads,
                            Err(h) => {
                                self.quarantine.push(h);
                                released = Err(TrackerError::Uncovered);
                            }
                        }
                        proofs.pop();
                    }
                    Err(e) => {
                        self.quarantine.push(held);
                        failed = Some(e);
                        left.push((va.min(end), end, cursor));
                        break 'mappings;
                    }
                }
            }
        }
        // After a failure: clear what the first domain still maps (deferred with the
        // failed gather) and hold every page not yet released for every domain.
        for (iova, m) in chunks {
            left.push((iova, iova + m.size, ExtentCursor::new(m.extents)));
        }
        if left.is_empty() {
            return match failed {
                Some(e) => Err(e.into()),
                None => released,
            };
        }
        let mut gather = IotlbGather::new();
        let mut held = Held::default();
        let mut kept = Detached::default();
        for (start, end, mut cursor) in left {
            if start < end {
                let keep = has_source && cursor.extents.is_empty();
                unmap_one(first, mem, start, end - start, keep, &mut gather, &mut kept);
                held.push_pages(start, end, cursor.take(end - start));
            }
        }
        held.push_detached(&format, kept);
        first.defer(gather);
        for o in owed {
            held.owe(o);
        }
        held.owe_from_now(first.unit(), first.id());
        self.settle(held, &[], mem, failed, release)
    }
}

/// Regions unmapped from the first domain and not yet flushed.
struct Batch<F: PteFormat> {
    gather: IotlbGather,
    held: Held<F>,
    kept: Detached,
    regions: u32,
}

/// How much the per-call strategies unmap at `va`: one page, or the physically
/// contiguous chunk found with one iova-to-phys lookup per page.
fn chunk_len<F: PteFormat, M: TableMemory>(
    domain: &Domain<F>,
    mem: &M,
    strategy: UnmapStrategy,
    va: u64,
    end: u64,
) -> u64 {
    // vfio looks the first page up in every strategy to find what to unpin.
    let Some(phys) = domain.iova_to_phys(mem, va) else {
        return PAGE_SIZE;
    };
    let search = match strategy {
        UnmapStrategy::PageByPage => false,
        UnmapStrategy::LinuxFgsp | UnmapStrategy::Linux2018 => !domain.fgsp(),
        _ => true,
    };
    let mut len = PAGE_SIZE;
    if search {
        while va + len < end && domain.iova_to_phys(mem, va + len) == Some(phys + len) {
            len += PAGE_SIZE;
        }
    }
    len
}
