//! The DMA-mapping tracker: the vfio type1 analogue for one guest address space.
//!
//! It remembers every mapping (IOVA -> host extents), replays them into each attached
//! domain, probes each domain for fine-grained superpages (`fgsp`) at attach, and unmaps
//! with a selectable [`UnmapStrategy`]. Host pages go back to their owner only through
//! [`PendingRelease::release_after`], i.e. after the invalidation covering them completed.

mod release;
mod unmap;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod unit_hook_tests;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

pub use release::{HostExtent, PendingRelease};

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
    /// As `SeedChunked`, but fgsp domains skip the search (later Linux).
    LinuxFgsp,
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
    /// Page-table entries read while unmapping.
    pub walk_steps: u64,
}

/// Why a tracker operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackerError {
    /// The page-table engine refused.
    Map(MapError),
    /// The hardware failed an invalidation; affected pages stay unreleased.
    Hw(HwError),
    /// Misaligned, empty or inconsistent range or extents.
    BadRange,
    /// The new mapping overlaps an existing one.
    Overlap,
    /// The range cuts through a mapping (only whole mappings can be unmapped).
    SplitsMapping,
    /// No free, aligned IOVA hole for the fgsp probe.
    NoProbeHole,
    /// No attached domain with that index.
    NoSuchDomain,
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

/// One DMA mapping: `size` bytes of IOVA backed by `extents` in order.
#[derive(Debug, Clone)]
struct Mapping {
    size: u64,
    prot: Prot,
    /// Maximal physically contiguous pieces (adjacent extents merged).
    extents: Vec<HostExtent>,
}

/// IOVA ranges the fgsp probe never uses by default: page 0 and the windows no domain
/// maps ([`RESERVED_IOVA`](crate::domain::RESERVED_IOVA): interrupts, HyperTransport).
pub const DEFAULT_RESERVED: [(u64, u64); 3] =
    [(0, 0x10000), crate::domain::RESERVED_IOVA[0], crate::domain::RESERVED_IOVA[1]];

/// Mappings of one address space and the domains they are mirrored into.
#[derive(Debug)]
pub struct DmaTracker<F: PteFormat> {
    mappings: BTreeMap<u64, Mapping>,
    domains: Vec<Domain<F>>,
    strategy: UnmapStrategy,
    counters: TrackerCounters,
    probe_pair: PhysAddr,
    reserved: Vec<(u64, u64)>,
    pending: PendingRelease,
    /// Pages whose invalidation failed: released only by `retry_release`.
    quarantine: PendingRelease,
}

impl<F: PteFormat> DmaTracker<F> {
    /// An empty tracker. `probe_pair` is an 8 KiB-aligned pair of hypervisor-owned pages
    /// the fgsp probe maps read-only for an instant (never guest memory).
    pub fn new(strategy: UnmapStrategy, probe_pair: PhysAddr) -> Self {
        Self {
            mappings: BTreeMap::new(),
            domains: Vec::new(),
            strategy,
            counters: TrackerCounters::default(),
            probe_pair: probe_pair & !(2 * PAGE_SIZE - 1),
            reserved: DEFAULT_RESERVED.to_vec(),
            pending: PendingRelease::default(),
            quarantine: PendingRelease::default(),
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

    /// Bytes of host memory held back because an invalidation failed.
    pub fn unreleased_bytes(&self) -> u64 {
        self.pending.bytes() + self.quarantine.bytes()
    }

    /// After an invalidation failure: invalidates every attached domain wholesale and,
    /// once that completed, releases the pages held back.
    pub fn retry_release<I: InvalidatorSet + ?Sized>(
        &mut self,
        inv: &mut I,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), TrackerError> {
        let domains = &self.domains;
        self.quarantine.release_after(
            || {
                for d in domains {
                    let unit = inv.unit(d.unit());
                    unit.invalidate_domain(d.id())?;
                    unit.sync()?;
                }
                Ok(())
            },
            release,
        )?;
        Ok(())
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
        let mut merged: Vec<HostExtent> = Vec::new();
        let mut size = 0u64;
        for e in extents {
            if e.len == 0 || (e.paddr | e.len) & (PAGE_SIZE - 1) != 0 {
                return Err(TrackerError::BadRange);
            }
            size = size.checked_add(e.len).ok_or(TrackerError::BadRange)?;
            match merged.last_mut() {
                Some(last) if last.paddr + last.len == e.paddr => last.len += e.len,
                _ => merged.push(*e),
            }
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
        let mapping = Mapping { size, prot, extents: merged };
        for i in 0..self.domains.len() {
            if let Err(e) = map_into(&mut self.domains[i], mem, inv, iova, &mapping) {
                for d in &mut self.domains[..=i] {
                    let mut gather = IotlbGather::new();
                    d.unmap(mem, iova, size, &mut gather)?;
                    if let Err(hw) = d.flush(mem, &mut gather, inv.unit(d.unit())) {
                        // Its tables wait for the domain's next flush instead of leaking.
                        d.defer(gather);
                        return Err(hw.into());
                    }
                }
                return Err(e);
            }
        }
        self.mappings.insert(iova, mapping);
        Ok(())
    }

    /// Attaches `domain`: probes it for fgsp in a free IOVA hole, then replays every
    /// mapping into it. Returns its index, or the domain back with the error.
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
            if let Err(e) = map_into(&mut domain, mem, inv, iova, m) {
                let mut gather = IotlbGather::new();
                for (iova, size) in done {
                    let _ = domain.unmap(mem, iova, size, &mut gather);
                }
                let _ = domain.unmap(mem, iova, m.size, &mut gather);
                if let Err(hw) = domain.flush(mem, &mut gather, inv.unit(domain.unit())) {
                    domain.defer(gather);
                    return Err((domain, hw.into()));
                }
                return Err((domain, e));
            }
            done.push((iova, m.size));
        }
        self.domains.push(domain);
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
    /// tables are left as they were and the probe's IOVA is invalidated.
    fn probe_fgsp<M: TableMemory, I: InvalidatorSet + ?Sized>(
        &mut self,
        mem: &mut M,
        inv: &mut I,
        domain: &mut Domain<F>,
    ) -> Result<bool, TrackerError> {
        let hole = self.probe_hole(mem, domain).ok_or(TrackerError::NoProbeHole)?;
        domain.map(mem, hole, self.probe_pair, 2 * PAGE_SIZE, Prot::READ)?;
        let mut gather = IotlbGather::new();
        let first = domain.unmap(mem, hole, PAGE_SIZE, &mut gather)?;
        let fgsp = first.size > PAGE_SIZE;
        if !fgsp {
            domain.unmap(mem, hole + PAGE_SIZE, PAGE_SIZE, &mut gather)?;
        }
        domain.flush(mem, &mut gather, inv.unit(domain.unit()))?;
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
                Ok(self.domains.remove(index))
            }
            Err(e) => {
                domain.defer(gather);
                Err(e)
            }
        }
    }
}

/// Maps `m`'s extents at `iova` into `domain` and tells the domain's unit (caching-mode
/// units may hold the not-present entries). On failure the caller unmaps the whole range
/// (through a gather and a flush), so nothing is left behind.
fn map_into<F: PteFormat, M: TableMemory, I: InvalidatorSet + ?Sized>(
    domain: &mut Domain<F>,
    mem: &mut M,
    inv: &mut I,
    iova: u64,
    m: &Mapping,
) -> Result<(), TrackerError> {
    let mut va = iova;
    for e in &m.extents {
        domain.map(mem, va, e.paddr, e.len, m.prot)?;
        va += e.len;
    }
    let block = crate::invalidate::IovaBlock::covering(iova, m.size);
    inv.unit(domain.unit()).after_map(domain.id(), block)?;
    Ok(())
}
