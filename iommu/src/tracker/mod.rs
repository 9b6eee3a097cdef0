//! The DMA-mapping tracker: the vfio type1 analogue for one guest address space.
//!
//! It remembers every mapping (IOVA -> host extents), replays them into each attached
//! domain, probes each domain for fine-grained superpages (`fgsp`) at attach, and unmaps
//! with a selectable [`UnmapStrategy`]. Host pages go back to their owner only through
//! [`Held::release`], which needs a proof ([`crate::completed::Completed`]) that an
//! invalidation covering them completed in every domain that mapped them.

mod release;
mod unmap;

#[cfg(test)]
mod hole_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod unit_hook_tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub use release::{Held, HostExtent, Owed};

use crate::completed::Completed;
use crate::domain::{Domain, IotlbGather};
use crate::error::HwError;
use crate::invalidate::IotlbInvalidator;
use crate::pgtable::{MapError, Prot, PteFormat, TableMemory};
use crate::platform::{PhysAddr, PAGE_SIZE};

/// How unmap walks a mapping; selectable so the benchmark can compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnmapStrategy {
    /// One 4 KiB unmap call and one synchronous flush per page (Linux before chunking).
    PageByPage,
    /// Search contiguity with iova-to-phys per page, unmap the chunk, flush per chunk
    /// (the seed commit "vfio/type1: DMA unmap chunking").
    SeedChunked,
    /// As `SeedChunked`, but fgsp domains skip the search (Linux 2015-2018).
    LinuxFgsp,
    /// vfio type1 since 2018 (`unmap_unpin_fast`): the `LinuxFgsp` chunks, each unmapped
    /// without waiting (one invalidation command per region), and one completion wait
    /// per up to 512 regions (`VFIO_IOMMU_TLB_SYNC_MAX`) before their pages are released.
    Linux2018,
    /// This project's: the tracker's records already name every host page, so the
    /// contiguity search (and with it the fgsp distinction) disappears: one range unmap
    /// per mapping, all invalidations gathered into one flush per operation, and the
    /// pages released after it.
    #[default]
    Gathered,
}

/// Costs the benchmark reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerCounters {
    /// `Domain::unmap` calls.
    pub unmap_calls: u64,
    /// Invalidation commands issued (blocks plus domain-wide).
    pub invalidations: u64,
    /// Waits for invalidation completion.
    pub syncs: u64,
    /// Page-table entries read while unmapping (and releasing from the leaves).
    pub walk_steps: u64,
    /// Most bytes of bookkeeping (records, pending releases, gathers) held at once.
    pub bookkeeping_peak: u64,
}

/// Why a tracker operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerError {
    /// The page-table engine refused.
    Map(MapError),
    /// The hardware failed an invalidation. Every host page it left uncovered (the
    /// caller's pages of a failed `map_dma` included) is quarantined: never handed out
    /// until [`DmaTracker::retry_release`] completes a covering invalidation.
    Hw(HwError),
    /// The completed invalidations did not cover every page (an unmap found less than
    /// was recorded): those pages are quarantined as after a hardware failure.
    Uncovered,
    /// Misaligned, empty or inconsistent range or extents.
    BadRange,
    /// The new mapping overlaps an existing one.
    Overlap,
    /// The range cuts through a mapping (only whole mappings can be unmapped).
    SplitsMapping,
    /// No attached domain with that index.
    NoSuchDomain,
}

impl core::fmt::Display for TrackerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TrackerError::Map(e) => write!(f, "the page tables refused: {e}"),
            TrackerError::Hw(e) => write!(
                f,
                "the IOMMU failed ({e}); the pages it left uncovered are quarantined until a \
                 retried invalidation completes"
            ),
            TrackerError::Uncovered => f.write_str(
                "the completed invalidations did not cover every page unmapped (less was \
                 mapped than recorded); those pages are quarantined",
            ),
            TrackerError::BadRange => {
                f.write_str("misaligned, empty or inconsistent DMA range or host extents")
            }
            TrackerError::Overlap => f.write_str("the DMA range overlaps an existing mapping"),
            TrackerError::SplitsMapping => f.write_str(
                "the DMA range cuts through a mapping (only whole mappings can be unmapped)",
            ),
            TrackerError::NoSuchDomain => f.write_str("no attached domain with that index"),
        }
    }
}

impl From<MapError> for TrackerError {
    fn from(e: MapError) -> Self {
        TrackerError::Map(e)
    }
}

impl From<HwError> for TrackerError {
    fn from(e: HwError) -> Self {
        TrackerError::Hw(e)
    }
}

/// Finds the invalidator of the unit a domain lives on (see `Domain::unit`).
pub trait InvalidatorSet {
    /// The invalidator for unit number `unit`.
    fn unit(&mut self, unit: usize) -> &mut dyn IotlbInvalidator;
}

impl<T: IotlbInvalidator> InvalidatorSet for T {
    fn unit(&mut self, _unit: usize) -> &mut dyn IotlbInvalidator {
        self
    }
}

/// One DMA mapping: `size` bytes of IOVA.
#[derive(Debug, Clone)]
struct Mapping {
    size: u64,
    prot: Prot,
    /// The host pages behind it, in IOVA order (maximal contiguous pieces), only while no
    /// domain is attached: otherwise the first domain's tables are the one record.
    extents: Vec<HostExtent>,
}

/// Bytes the tracker spends per mapping record besides its extents (the B-tree entry).
const MAPPING_RECORD_BYTES: u64 = (core::mem::size_of::<(u64, Mapping)>() + 8) as u64;

/// Yields `extents` with physically adjacent pieces merged.
fn merged(extents: &[HostExtent]) -> impl Iterator<Item = HostExtent> + '_ {
    let mut it = extents.iter().copied().peekable();
    core::iter::from_fn(move || {
        let mut run = it.next()?;
        while let Some(next) = it.next_if(|e| run.paddr + run.len == e.paddr) {
            run.len += next.len;
        }
        Some(run)
    })
}

/// IOVA the replay of a table-held mapping copies at a time (bounds its run buffer).
const REPLAY_WINDOW: u64 = 1 << 26;

/// IOVA ranges the fgsp probe never uses by default: page 0 and the windows no domain
/// maps ([`RESERVED_IOVA`](crate::domain::RESERVED_IOVA): interrupts, HyperTransport).
pub const DEFAULT_RESERVED: [(u64, u64); 3] =
    [(0, 0x10000), crate::domain::RESERVED_IOVA[0], crate::domain::RESERVED_IOVA[1]];

/// Mappings of one address space and the domains they are mirrored into.
#[derive(Debug)]
pub struct DmaTracker<F: PteFormat> {
    mappings: BTreeMap<u64, Mapping>,
    domains: Vec<Domain<F>>,
    /// Domains (unit, id) whose detach failed after their tables were cleared: they stay
    /// attached (their deferred flush still owed) but no longer name every page, so they
    /// are never the record of the pages.
    detaching: Vec<(usize, crate::invalidate::DomainId)>,
    strategy: UnmapStrategy,
    counters: TrackerCounters,
    probe_pair: PhysAddr,
    reserved: Vec<(u64, u64)>,
    /// Pages whose invalidation failed, each with the domains it is owed by: released
    /// only by `retry_release`.
    quarantine: Vec<Held<F>>,
    /// Domains no longer attached that may still cache pages of live mappings (a failed
    /// attach rollback): every later release also waits for them.
    stale: Vec<Owed>,
}

impl<F: PteFormat> DmaTracker<F> {
    /// An empty tracker. `probe_pair` is an 8 KiB-aligned pair of hypervisor-owned pages
    /// the fgsp probe maps read-only for an instant (never guest memory); a pair that is
    /// zero or misaligned means the probe never runs (every domain gets fgsp false).
    pub fn new(strategy: UnmapStrategy, probe_pair: PhysAddr) -> Self {
        Self {
            mappings: BTreeMap::new(),
            domains: Vec::new(),
            detaching: Vec::new(),
            strategy,
            counters: TrackerCounters::default(),
            probe_pair,
            reserved: DEFAULT_RESERVED.to_vec(),
            quarantine: Vec::new(),
            stale: Vec::new(),
        }
    }

    /// Keeps the fgsp probe out of `[start, end)` (for example an IOVA the platform reserves).
    pub fn reserve_iova(&mut self, start: u64, end: u64) {
        self.reserved.push((start, end));
    }

    /// Costs so far.
    pub fn counters(&self) -> TrackerCounters {
        self.counters
    }

    /// Zeroes the cost counters.
    pub fn reset_counters(&mut self) {
        self.counters = TrackerCounters::default();
    }

    /// The attached domains, in attach order (index = attach handle).
    pub fn domains(&self) -> &[Domain<F>] {
        &self.domains
    }

    /// Number of mappings.
    pub fn mapping_count(&self) -> usize {
        self.mappings.len()
    }

    /// The attached domain whose tables name every mapped page (the record of the pages),
    /// if any: the first one no failed detach cleared.
    fn source(&self) -> Option<usize> {
        self.domains.iter().position(|d| !self.detaching.contains(&(d.unit(), d.id())))
    }

    /// Bytes of bookkeeping held now: mapping records (with their extents while no
    /// domain holds them), quarantined releases and stale-domain notes. The page tables
    /// themselves are not counted.
    pub fn bookkeeping_bytes(&self) -> u64 {
        let records: u64 = self
            .mappings
            .values()
            .map(|m| MAPPING_RECORD_BYTES + 16 * m.extents.capacity() as u64)
            .sum();
        let quarantine: u64 = self.quarantine.iter().map(Held::bookkeeping_bytes).sum();
        records + quarantine + (self.stale.capacity() * core::mem::size_of::<Owed>()) as u64
    }

    /// Notes `transient` bytes held on top of [`bookkeeping_bytes`](Self::bookkeeping_bytes)
    /// for the peak counter.
    fn note_bookkeeping(&mut self, transient: u64) {
        let now = self.bookkeeping_bytes() + transient;
        self.counters.bookkeeping_peak = self.counters.bookkeeping_peak.max(now);
    }

    /// Bytes of host memory held back because an invalidation failed.
    pub fn unreleased_bytes(&self) -> u64 {
        self.quarantine.iter().map(Held::bytes).sum()
    }

    /// After an invalidation failure: invalidates, domain-wide, every domain a
    /// quarantined page is owed by (attached or not: a per-call teardown hands its domains
    /// back even when a chunk's flush failed) and releases what the completed
    /// invalidations cover. Attached domains also get their deferred work flushed, so the
    /// table pages failed flushes kept are freed.
    pub fn retry_release<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), TrackerError> {
        for d in &mut self.domains {
            let mut gather = IotlbGather::new();
            if let Err(e) = d.flush(mem, &mut gather, inv.unit(d.unit())) {
                d.defer(gather);
                return Err(e.into());
            }
        }
        let mut targets: Vec<(usize, crate::invalidate::DomainId)> = Vec::new();
        for o in self.quarantine.iter().flat_map(|h| h.owed()).chain(&self.stale) {
            if !targets.contains(&(o.unit, o.domain)) {
                targets.push((o.unit, o.domain));
            }
        }
        let mut proofs = Vec::with_capacity(targets.len());
        for (unit, id) in targets {
            proofs.push(Completed::domain_wide(inv.unit(unit), unit, id)?);
        }
        // Domain-wide completions after their stamps: nothing stale remains.
        self.stale.clear();
        for held in core::mem::take(&mut self.quarantine) {
            if let Err(h) = held.release(&proofs, mem, release) {
                self.quarantine.push(h);
            }
        }
        if self.quarantine.is_empty() {
            Ok(())
        } else {
            Err(TrackerError::Uncovered)
        }
    }

    /// Records a mapping of `iova..` onto `extents` (in order) and maps it into every
    /// attached domain. On failure nothing is recorded or left mapped.
    pub fn map_dma<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        iova: u64,
        extents: &[HostExtent],
        prot: Prot,
    ) -> Result<(), TrackerError> {
        let mut size = 0u64;
        for e in extents {
            if e.len == 0 || (e.paddr | e.len) & (PAGE_SIZE - 1) != 0 {
                return Err(TrackerError::BadRange);
            }
            size = size.checked_add(e.len).ok_or(TrackerError::BadRange)?;
        }
        let end = iova.checked_add(size).ok_or(TrackerError::BadRange)?;
        if size == 0 || iova & (PAGE_SIZE - 1) != 0 {
            return Err(TrackerError::BadRange);
        }
        if let Some((&prev, m)) = self.mappings.range(..end).next_back() {
            if prev + m.size > iova {
                return Err(TrackerError::Overlap);
            }
        }
        // With a domain attached its tables are the record: no copy of the extents.
        let record = if self.source().is_none() { merged(extents).collect() } else { Vec::new() };
        for i in 0..self.domains.len() {
            if let Err(e) =
                map_into(&mut self.domains[i], mem, inv, iova, size, prot, merged(extents))
            {
                return Err(self.roll_back_map(mem, inv, i, iova, size, extents, e));
            }
        }
        self.mappings.insert(iova, Mapping { size, prot, extents: record });
        self.note_bookkeeping(0);
        Ok(())
    }

    /// Undoes a `map_dma` that failed on domain `failed_at`: clears the range from every
    /// domain it reached (all of them, even when a flush fails on the way), and gives the
    /// caller's pages back only if every flush completed; otherwise they are quarantined.
    #[allow(clippy::too_many_arguments)]
    fn roll_back_map<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        failed_at: usize,
        iova: u64,
        size: u64,
        extents: &[HostExtent],
        cause: TrackerError,
    ) -> TrackerError {
        let mut held = Held::default();
        let mut proofs = Vec::new();
        let mut failed = None;
        for d in &mut self.domains[..=failed_at] {
            let mut gather = IotlbGather::new();
            // Cannot fail where map accepted the range; where map refused it nothing is
            // mapped (and the engine's own rollback span is flushed below).
            let _ = d.unmap(mem, iova, size, &mut gather);
            // The whole range, mapped or not (the failed domain mapped only part of it):
            // the caller's pages come back only under an invalidation of all of it.
            gather.add_range(iova, iova + size);
            held.owe_from_now(d.unit(), d.id());
            match d.flush_proved(mem, &mut gather, inv.unit(d.unit())) {
                Ok((_, p)) => proofs.push(p),
                Err(hw) => {
                    // Its tables wait for the domain's next flush instead of leaking.
                    d.defer(gather);
                    failed = failed.or(Some(hw));
                }
            }
        }
        held.push_pages(iova, iova + size, merged(extents).collect());
        // Released here means: left with the caller, who still owns them.
        match (held.release(&proofs, mem, &mut |_| {}), failed) {
            (Ok(_), _) => cause,
            (Err(h), hw) => {
                self.quarantine.push(h);
                hw.map_or(TrackerError::Uncovered, TrackerError::Hw)
            }
        }
    }

    /// Attaches `domain`: probes it for fgsp in a free IOVA hole (best effort), then
    /// replays every mapping into it. Returns its index, or the domain back with the error.
    pub fn attach<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        mut domain: Domain<F>,
    ) -> Result<usize, (Domain<F>, TrackerError)> {
        match self.probe_fgsp(mem, inv, &mut domain) {
            Ok(fgsp) => domain.set_fgsp(fgsp),
            Err(e) => return Err((domain, e)),
        }
        let mut done = Vec::new();
        for (&iova, m) in &self.mappings {
            let replayed = match self.source().map(|i| &self.domains[i]) {
                Some(source) if m.extents.is_empty() => {
                    replay_from(source, &mut domain, mem, inv, iova, m.size, m.prot)
                }
                _ => {
                    map_into(&mut domain, mem, inv, iova, m.size, m.prot, m.extents.iter().copied())
                }
            };
            if let Err(e) = replayed {
                let mut gather = IotlbGather::new();
                for (iova, size) in done {
                    let _ = domain.unmap(mem, iova, size, &mut gather);
                }
                let _ = domain.unmap(mem, iova, m.size, &mut gather);
                if let Err(hw) = domain.flush(mem, &mut gather, inv.unit(domain.unit())) {
                    // The domain goes back to the caller and may still cache the
                    // tracker's pages: their later release also waits for it.
                    domain.defer(gather);
                    self.stale.push(Owed {
                        unit: domain.unit(),
                        domain: domain.id(),
                        after: crate::completed::Stamp::now(),
                    });
                    return Err((domain, hw.into()));
                }
                return Err((domain, e));
            }
            done.push((iova, m.size));
        }
        self.domains.push(domain);
        // The tables hold every page now: the records' copies go.
        for m in self.mappings.values_mut() {
            m.extents = Vec::new();
        }
        Ok(self.domains.len() - 1)
    }

    /// A free, 8 KiB-aligned IOVA hole of two pages: outside every mapping and reserved
    /// range, and unmapped in `domain`'s tables.
    fn probe_hole<M: TableMemory>(&self, mem: &M, domain: &Domain<F>) -> Option<u64> {
        let align = 2 * PAGE_SIZE;
        let limit = domain.table().aperture();
        let mut cand = 0u64;
        'search: for _ in 0..self.mappings.len() + self.reserved.len() + 64 {
            if cand + align > limit {
                return None;
            }
            let busy = self
                .reserved
                .iter()
                .copied()
                .chain(
                    self.mappings.range(..cand + align).next_back().map(|(&s, m)| (s, s + m.size)),
                )
                .find(|&(s, e)| s < cand + align && e > cand);
            if let Some((_, e)) = busy {
                cand = e.div_ceil(align) * align;
                continue 'search;
            }
            if domain.iova_to_phys(mem, cand).is_some()
                || domain.iova_to_phys(mem, cand + PAGE_SIZE).is_some()
            {
                cand += align;
                continue 'search;
            }
            return Some(cand);
        }
        None
    }

    /// Maps two contiguous pages, unmaps one, and reports whether more came back; the
    /// tables are left as they were and the probe's IOVA is invalidated. Best effort, as
    /// in Linux: a probe that cannot run (no usable probe pair, no free hole, a map the
    /// engine refuses) means fgsp false. A failed flush is deferred to the domain's next
    /// flush like on every other path, and reported: a unit that cannot invalidate is not
    /// fit to attach.
    fn probe_fgsp<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        domain: &mut Domain<F>,
    ) -> Result<bool, TrackerError> {
        let pair = self.probe_pair;
        let encodable = pair
            .checked_add(2 * PAGE_SIZE - 1)
            .is_some_and(|last| last & !crate::pgtable::PADDR_MASK & !0xFFF == 0);
        if pair == 0 || pair & (2 * PAGE_SIZE - 1) != 0 || !encodable {
            return Ok(false);
        }
        let Some(hole) = self.probe_hole(mem, domain) else {
            return Ok(false);
        };
        let mut gather = IotlbGather::new();
        let fgsp = match domain.map(mem, hole, pair, 2 * PAGE_SIZE, Prot::READ) {
            // The engine rolled the map back; its span is flushed below.
            Err(_) => false,
            Ok(()) => {
                let first = domain.unmap(mem, hole, PAGE_SIZE, &mut gather);
                // Whatever the first unmap left of the probe goes too.
                let _ = domain.unmap(mem, hole, 2 * PAGE_SIZE, &mut gather);
                matches!(first, Ok(u) if u.size > PAGE_SIZE)
            }
        };
        if let Err(hw) = domain.flush(mem, &mut gather, inv.unit(domain.unit())) {
            domain.defer(gather);
            return Err(hw.into());
        }
        Ok(fgsp)
    }

    /// Unmaps every mapping from domain `index` (gathered, one flush) and hands the
    /// domain back; the mappings stay recorded and their host pages stay pinned.
    pub fn detach<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        index: usize,
    ) -> Result<Domain<F>, TrackerError> {
        if index >= self.domains.len() {
            return Err(TrackerError::NoSuchDomain);
        }
        let key = (self.domains[index].unit(), self.domains[index].id());
        let others_complete = self
            .domains
            .iter()
            .enumerate()
            .any(|(i, d)| i != index && !self.detaching.contains(&(d.unit(), d.id())));
        if !others_complete {
            // The last table naming every page is cleared: the records take them back.
            let d = &self.domains[index];
            for (&iova, m) in self.mappings.iter_mut() {
                if m.extents.is_empty() {
                    let mut runs = Vec::new();
                    d.table().for_each_run(mem, iova, m.size, |r| {
                        runs.push(HostExtent { paddr: r.paddr, len: r.size })
                    });
                    m.extents = runs;
                }
            }
        }
        // The domain leaves the list only once its flush completed: on any error it stays
        // attached (its failed gather deferred to the next flush), so nothing is lost.
        let domain = &mut self.domains[index];
        let mut gather = IotlbGather::new();
        let mut unmapped = Ok(());
        for (&iova, m) in &self.mappings {
            if let Err(e) = domain.unmap(mem, iova, m.size, &mut gather) {
                unmapped = Err(e);
                break;
            }
            self.counters.unmap_calls += 1;
        }
        let flushed = unmapped.map_err(TrackerError::from).and_then(|()| {
            domain.flush(mem, &mut gather, inv.unit(domain.unit())).map_err(TrackerError::from)
        });
        match flushed {
            Ok(stats) => {
                self.counters.invalidations += stats.total();
                self.counters.syncs += 1;
                self.detaching.retain(|&k| k != key);
                Ok(self.domains.remove(index))
            }
            Err(e) => {
                domain.defer(gather);
                if !self.detaching.contains(&key) {
                    self.detaching.push(key);
                }
                Err(e)
            }
        }
    }
}

/// Maps `extents` (in order) at `iova` into `domain` and tells the domain's unit
/// (caching-mode units may hold the not-present entries). On failure the caller unmaps
/// the whole range (through a gather and a flush), so nothing is left behind.
fn map_into<F: PteFormat, M: TableMemory, I: InvalidatorSet + ?Sized>(
    domain: &mut Domain<F>,
    mem: &mut M,
    inv: &mut I,
    iova: u64,
    size: u64,
    prot: Prot,
    extents: impl Iterator<Item = HostExtent>,
) -> Result<(), TrackerError> {
    domain.map_pieces(mem, iova, size, &mut extents.map(|e| (e.paddr, e.len)), prot)?;
    let block = crate::invalidate::IovaBlock::covering(iova, size);
    inv.unit(domain.unit()).after_map(domain.id(), block)?;
    Ok(())
}

/// Maps `[iova, iova + size)` into `domain` as `source`'s tables map it, a window at a
/// time (so the copy of the runs stays small), then tells the unit.
fn replay_from<F: PteFormat, M: TableMemory, I: InvalidatorSet + ?Sized>(
    source: &Domain<F>,
    domain: &mut Domain<F>,
    mem: &mut M,
    inv: &mut I,
    iova: u64,
    size: u64,
    prot: Prot,
) -> Result<(), TrackerError> {
    let end = iova + size;
    let mut va = iova;
    let mut runs = Vec::new();
    while va < end {
        let len = (end - va).min(REPLAY_WINDOW - (va & (REPLAY_WINDOW - 1)));
        runs.clear();
        source.table().for_each_run(mem, va, len, |r| runs.push(r));
        for r in &runs {
            domain.map(mem, r.iova, r.paddr, r.size, prot)?;
        }
        va += len;
    }
    let block = crate::invalidate::IovaBlock::covering(iova, size);
    inv.unit(domain.unit()).after_map(domain.id(), block)?;
    Ok(())
}
