//! unmap_dma and teardown under each [`UnmapStrategy`].

use alloc::vec::Vec;

use super::{
    DmaTracker, HostExtent, InvalidatorSet, Mapping, PendingRelease, TrackerCounters, TrackerError,
    UnmapStrategy,
};
use crate::domain::{Domain, IotlbGather};
use crate::invalidate::IotlbInvalidator;
use crate::pgtable::{PteFormat, TableMemory};
use crate::platform::PAGE_SIZE;

/// Walks a mapping's host extents in IOVA order, handing out the pieces behind
/// consecutive IOVA spans (so per-page release stays linear).
struct ExtentCursor<'a> {
    extents: &'a [HostExtent],
    idx: usize,
    off: u64,
}

impl<'a> ExtentCursor<'a> {
    fn new(extents: &'a [HostExtent]) -> Self {
        Self { extents, idx: 0, off: 0 }
    }

    /// Queues the host memory behind the next `len` bytes of IOVA.
    fn take(&mut self, mut len: u64, pending: &mut PendingRelease) {
        while len > 0 && self.idx < self.extents.len() {
            let e = self.extents[self.idx];
            let n = (e.len - self.off).min(len);
            pending.push(HostExtent { paddr: e.paddr + self.off, len: n });
            len -= n;
            self.off += n;
            if self.off == e.len {
                self.idx += 1;
                self.off = 0;
            }
        }
    }
}

/// Flushes `gather` on `domain` and counts it.
fn flush_counted<F: PteFormat, M: TableMemory>(
    domain: &mut Domain<F>,
    mem: &mut M,
    gather: &mut IotlbGather,
    inv: &mut dyn IotlbInvalidator,
    counters: &mut TrackerCounters,
) -> Result<(), crate::error::HwError> {
    let stats = domain.flush(mem, gather, inv)?;
    counters.invalidations += stats.total();
    counters.syncs += 1;
    Ok(())
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
        self.unmap_taken(mem, inv, taken, release)?;
        Ok(bytes)
    }

    /// Unmaps everything from every domain, releases every host page after the
    /// invalidations completed, and hands back the (now empty) domains for the caller
    /// to detach from hardware and `destroy`.
    pub fn teardown<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<Vec<Domain<F>>, TrackerError> {
        let taken: Vec<(u64, Mapping)> = core::mem::take(&mut self.mappings).into_iter().collect();
        self.unmap_taken(mem, inv, taken, release)?;
        Ok(core::mem::take(&mut self.domains))
    }

    /// Unmaps `taken` from every domain. Domains after the first are unmapped a mapping
    /// per call and flushed once; the first follows the strategy; pages are released only
    /// when every domain's flush covering them has completed. On failure every taken page
    /// not yet released is quarantined (for `retry_release`) and cleared from every
    /// domain's tables, so none stays reachable or is lost.
    fn unmap_taken<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        mut taken: Vec<(u64, Mapping)>,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), TrackerError> {
        let steps_before: u64 = self.domains.iter().map(|d| d.table().walk_steps()).sum();
        let mut queued = Queued::default();
        let result = self.unmap_taken_inner(mem, inv, &mut taken, &mut queued, release);
        if result.is_err() {
            // The ranges of the failed flush are lost with its gather: whatever was
            // queued may still be cached, so only a domain-wide invalidation frees it.
            self.quarantine.absorb(&mut self.pending);
            for (i, (_, m)) in taken.iter().enumerate().skip(queued.mapping) {
                let mut cursor = ExtentCursor::new(&m.extents);
                if i == queued.mapping {
                    cursor.take(queued.offset, &mut PendingRelease::default());
                }
                cursor.take(m.size, &mut self.quarantine);
            }
            for d in &mut self.domains {
                let mut gather = IotlbGather::new();
                for &(iova, ref m) in &taken {
                    // Cannot fail: the range was accepted when it was mapped.
                    let _ = d.unmap(mem, iova, m.size, &mut gather);
                }
                d.defer(gather);
            }
        }
        let steps_after: u64 = self.domains.iter().map(|d| d.table().walk_steps()).sum();
        self.counters.walk_steps += steps_after - steps_before;
        result
    }

    fn unmap_taken_inner<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        taken: &mut [(u64, Mapping)],
        queued: &mut Queued,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), TrackerError> {
        let counters = &mut self.counters;
        let pending = &mut self.pending;
        let strategy = self.strategy;
        if strategy == UnmapStrategy::Gathered || self.domains.is_empty() {
            // Every page is released after the last flush: queue them all before any
            // step that can fail.
            for (_, m) in taken.iter_mut() {
                pending.push_batch(core::mem::take(&mut m.extents));
            }
            *queued = Queued { mapping: taken.len(), offset: 0 };
        }
        let Some((first, rest)) = self.domains.split_first_mut() else {
            // No domain ever translated these pages (detach flushed them).
            pending.release_after(|| Ok(()), release)?;
            return Ok(());
        };
        for d in rest.iter_mut() {
            let mut gather = IotlbGather::new();
            for &(iova, ref m) in taken.iter() {
                d.unmap(mem, iova, m.size, &mut gather)?;
                counters.unmap_calls += 1;
            }
            if let Err(e) = flush_counted(d, mem, &mut gather, inv.unit(d.unit()), counters) {
                d.defer(gather);
                return Err(e.into());
            }
        }
        match strategy {
            UnmapStrategy::Gathered => {
                let mut gather = IotlbGather::new();
                // The records already name every host page, so no contiguity search is
                // needed (fgsp or not): one range unmap per mapping, one flush in all.
                for &(iova, ref m) in taken.iter() {
                    first.unmap(mem, iova, m.size, &mut gather)?;
                    counters.unmap_calls += 1;
                }
                let unit = first.unit();
                let flushed = pending.release_after(
                    || flush_counted(first, mem, &mut gather, inv.unit(unit), counters),
                    release,
                );
                if flushed.is_err() {
                    first.defer(gather);
                }
                flushed?;
            }
            _ => {
                for (i, &(iova, ref m)) in taken.iter().enumerate() {
                    let end = iova + m.size;
                    let mut cursor = ExtentCursor::new(&m.extents);
                    let mut va = iova;
                    while va < end {
                        let len = chunk_len(first, mem, strategy, va, end);
                        let mut gather = IotlbGather::new();
                        let done = first.unmap(mem, va, len, &mut gather)?;
                        counters.unmap_calls += 1;
                        let next = if done.size == 0 {
                            va + len
                        } else {
                            (done.iova + done.size).min(end)
                        };
                        cursor.take(next - va, pending);
                        *queued = Queued { mapping: i, offset: next - iova };
                        let unit = first.unit();
                        let flushed = pending.release_after(
                            || flush_counted(first, mem, &mut gather, inv.unit(unit), counters),
                            release,
                        );
                        if flushed.is_err() {
                            first.defer(gather);
                        }
                        flushed?;
                        va = next.max(va + PAGE_SIZE);
                    }
                    *queued = Queued { mapping: i + 1, offset: 0 };
                }
            }
        }
        Ok(())
    }
}

/// How far an unmap has queued host pages: every byte of mappings before `mapping`, and
/// the first `offset` bytes of `mapping`, are released or waiting in `pending`.
#[derive(Debug, Default, Clone, Copy)]
struct Queued {
    mapping: usize,
    offset: u64,
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
        UnmapStrategy::LinuxFgsp => !domain.fgsp(),
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
