//! Teardown through the DMA tracker, proven with DMA: 1 GiB of IOVA mapped with 4 KiB
//! pages onto one 1 GiB host run, backed in IOVA order (contiguous) or permuted so no two
//! neighbouring IOVA pages are physically adjacent (fragmented). DMA warms the IOTLB at
//! sampled pages, `teardown()` unmaps everything, and the same DMAs must then move no data.
//! Every host page must come back through the release callback exactly once, and only
//! after the flush that covers it completed.

use super::translation::HostRun;
use super::tsc;
use super::{on_edu_unit, IommuTest, Rig, SuppressedInvalidation};
use crate::ensure;
use crate::mem::{frames, KernelMemory};
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::{region_fill, region_holds};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use iommu::error::HwError;
use iommu::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use iommu::pgtable::Prot;
use iommu::tracker::{DmaTracker, HostExtent, UnmapStrategy};
use iommu::unit::RemappingUnit;

/// Where the GiB sits in IOVA space (inside a 3-level, 39-bit aperture).
pub const IOVA_BASE: u64 = 0x40_0000_0000;
const GIB: u64 = 1 << 30;
const PAGES: u64 = GIB / 4096;
const LEN: usize = 128;
/// Sampled IOVA pages: first, last, middle and a few others.
const SAMPLES: [u64; 6] = [0, PAGES - 1, PAGES / 2, 1, 77_777, 200_003];

/// How the GiB is backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// IOVA page i -> host page i.
    Contiguous,
    /// IOVA page i -> host page (i * 40503) mod 2^18: a permutation (the factor is odd)
    /// whose neighbours are never adjacent.
    Fragmented,
}

impl Backing {
    /// The host page (index into the run) behind IOVA page `i`.
    pub fn host_page(self, i: u64) -> u64 {
        match self {
            Backing::Contiguous => i,
            Backing::Fragmented => (i * 40_503) % PAGES,
        }
    }

    /// The run's extents in IOVA order.
    pub fn extents(self, run: u64) -> Vec<HostExtent> {
        match self {
            Backing::Contiguous => vec![HostExtent { paddr: run, len: GIB }],
            Backing::Fragmented => (0..PAGES)
                .map(|i| HostExtent { paddr: run + self.host_page(i) * 4096, len: 4096 })
                .collect(),
        }
    }
}

/// What the unit was asked to do, in order, as the release callback and the test see it.
#[derive(Debug, Default)]
pub struct FlushLog {
    /// Invalidation commands issued through the recorder.
    pub invalidations: u64,
    /// Completed waits.
    pub syncs: u64,
    /// An invalidation was issued and not yet waited for.
    pub unsynced: bool,
}

/// Passes invalidations to the unit and records them, so the release callback can check
/// that every invalidation issued before it ran has completed.
pub struct Recorder<'a, U> {
    /// The unit doing the work.
    pub unit: &'a mut U,
    /// Shared with the release callback.
    pub log: &'a RefCell<FlushLog>,
}

impl<U: IotlbInvalidator> IotlbInvalidator for Recorder<'_, U> {
    fn max_block_order(&self) -> u32 {
        self.unit.max_block_order()
    }
    fn after_map(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        self.unit.after_map(domain, block)
    }
    fn invalidate_block(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        let mut log = self.log.borrow_mut();
        log.invalidations += 1;
        log.unsynced = true;
        self.unit.invalidate_block(domain, block)
    }
    fn invalidate_domain(&mut self, domain: DomainId) -> Result<(), HwError> {
        let mut log = self.log.borrow_mut();
        log.invalidations += 1;
        log.unsynced = true;
        self.unit.invalidate_domain(domain)
    }
    fn sync(&mut self) -> Result<(), HwError> {
        self.unit.sync()?;
        let mut log = self.log.borrow_mut();
        log.syncs += 1;
        log.unsynced = false;
        Ok(())
    }
}

fn hw(what: &'static str) -> impl Fn(HwError) -> String {
    move |e| format!("{what}: {e}")
}

struct Teardown {
    backing: Backing,
    /// The control: the unit never sees the teardown's invalidations, so the DMAs after
    /// it must still land through the stale IOTLB entries (else the test proves nothing).
    suppress: bool,
}

impl IommuTest for Teardown {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let backing = self.backing;
        let mem = &mut KernelMemory;
        let run = HostRun::with_alignment(GIB, 2 << 20)?;
        let probe = HostRun::with_alignment(8192, 8192)?;
        // The unit's own structures for this device (a VT-d context table for its bus)
        // exist before the count starts: attach and retire an empty domain once.
        let warm = rig.new_domain()?;
        rig.attach(&warm)?;
        rig.retire(warm)?;
        let free_before = frames::free_frames();
        let host = |i: u64| run.start + backing.host_page(i) * 4096;
        if backing == Backing::Fragmented {
            ensure!(
                (0..PAGES - 1).all(|i| host(i) + 4096 != host(i + 1)),
                "the fragmented backing has adjacent neighbours"
            );
        }
        let dom = rig.new_domain()?.with_page_sizes(1 << 12);
        let id = dom.id();
        let mut tracker = DmaTracker::new(UnmapStrategy::default(), probe.start);
        tracker.attach(mem, rig.unit, dom).map_err(|(_, e)| format!("attach: {e}"))?;
        let fgsp = tracker.domains()[0].fgsp();
        let extents = backing.extents(run.start);
        let t_map = tsc();
        tracker
            .map_dma(mem, rig.unit, IOVA_BASE, &extents, Prot::READ | Prot::WRITE)
            .map_err(|e| format!("map_dma: {e}"))?;
        let map_cycles = tsc() - t_map;
        drop(extents);
        rig.unit
            .after_map(id, IovaBlock { iova: IOVA_BASE, order: 30 })
            .and_then(|()| rig.unit.sync())
            .map_err(hw("after map"))?;
        rig.attach(&tracker.domains()[0])?;

        // Warm up: read the first page into edu's buffer, write it to every sample.
        let iova = |i: u64| IOVA_BASE + i * 4096 + 0x100;
        region_fill(host(0), 4096, 0x5A);
        rig.edu.read_from_memory(iova(0) - 0x100, 0, LEN).map_err(|e| format!("edu: {e}"))?;
        for &i in &SAMPLES[1..] {
            region_fill(host(i), 4096, 0xC3);
        }
        for &i in &SAMPLES {
            rig.edu.write_to_memory(iova(i), 0, LEN).map_err(|e| format!("edu: {e}"))?;
            ensure!(
                region_holds(host(i) + 0x100, LEN as u64, 0x5A, 0),
                "before teardown the DMA to IOVA page {i} did not land at host {:#x}",
                host(i)
            );
            region_fill(host(i), 4096, 0xC3);
        }

        // Teardown: pages come back only once every invalidation issued has completed.
        let log = RefCell::new(FlushLog::default());
        let mut seen = vec![0u64; (PAGES / 64) as usize];
        let mut releases = (0u64, 0u64, 0u64); // extents, pages, bad (double/early/foreign)
        let inv_before = rig.unit.invalidations_issued();
        let t0 = tsc();
        let domains = {
            let mut release = |e: HostExtent| {
                releases.0 += 1;
                let l = log.borrow();
                if l.unsynced || l.syncs == 0 {
                    releases.2 += 1;
                }
                for p in (e.paddr..e.paddr + e.len).step_by(4096) {
                    let k = p.wrapping_sub(run.start) / 4096;
                    releases.1 += 1;
                    if k >= PAGES || seen[(k / 64) as usize] & 1 << (k % 64) != 0 {
                        releases.2 += 1;
                    } else {
                        seen[(k / 64) as usize] |= 1 << (k % 64);
                    }
                }
            };
            let torn = if self.suppress {
                let mut rec = Recorder { unit: &mut SuppressedInvalidation, log: &log };
                tracker.teardown(mem, &mut rec, &mut release)
            } else {
                let mut rec = Recorder { unit: &mut *rig.unit, log: &log };
                tracker.teardown(mem, &mut rec, &mut release)
            };
            torn.map_err(|e| format!("teardown: {e}"))?
        };
        let cycles = tsc() - t0;
        let issued = rig.unit.invalidations_issued() - inv_before;
        let counters = tracker.counters();

        // After teardown: the same DMAs must move nothing.
        let mut landed = Vec::new();
        for &i in &SAMPLES {
            rig.edu.write_to_memory(iova(i), 0, LEN).map_err(|e| format!("edu: {e}"))?;
            if !region_holds(host(i), 4096, 0xC3, 0) {
                landed.push(i);
            }
        }
        // Only now, with the device blocked, may the (empty) tables go.
        let blocked = rig.unit.block_device(rig.rid).map_err(hw("block"));
        let blocked_before_destroy = blocked.is_ok();
        for d in domains {
            rig.unit.invalidate_domain(d.id()).map_err(hw("invalidate"))?;
            rig.unit.sync().map_err(hw("sync"))?;
            if blocked_before_destroy {
                rig.destroy(d);
            }
        }
        blocked?;
        let free_after = frames::free_frames();
        let l = log.into_inner();
        log::info!(
            "teardown {backing:?}: 1 GiB of 4K pages, fgsp probe {fgsp}, {} unmap calls, {} invalidations issued to the {} unit ({} seen by the tracker, {} waits), teardown {cycles} TSC cycles (map {map_cycles}), {} extents / {} pages released",
            counters.unmap_calls,
            issued,
            rig.unit.kind(),
            l.invalidations,
            l.syncs,
            releases.0,
            releases.1
        );
        ensure!(!fgsp, "the fgsp probe of a 4K-only domain said true");
        ensure!(free_after == free_before, "{} table frames leaked", free_before - free_after);
        if self.suppress {
            log::info!(
                "teardown control (invalidation suppressed): DMA still landed at {} of {} sampled pages",
                landed.len(),
                SAMPLES.len()
            );
            ensure!(issued == 0, "the control issued {issued} invalidations");
            ensure!(
                landed.len() == SAMPLES.len(),
                "with no invalidation only {landed:?} of the warmed pages still translated"
            );
            return Ok(());
        }
        ensure!(landed.is_empty(), "after teardown DMA still landed at IOVA pages {landed:?}");
        ensure!(
            releases.2 == 0,
            "{} releases were doubled, foreign or before the flush",
            releases.2
        );
        ensure!(releases.1 == PAGES, "{} of {PAGES} pages released", releases.1);
        ensure!(seen.iter().all(|w| *w == u64::MAX), "some host pages never came back");
        ensure!(l.syncs >= 1 && !l.unsynced, "teardown ended with unsynced invalidations");
        ensure!((1..=4).contains(&issued), "{issued} invalidations for one gathered teardown");
        Ok(())
    }
}

/// The fgsp probe on a domain with every page size the unit has: false on VT-d (unmap
/// returns exactly the 4K asked for), true on AMD-Vi v1 (the two-page probe becomes one
/// 8K NextLevel-7 page and unmap returns all of it).
struct FgspProbe;

impl IommuTest for FgspProbe {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let mem = &mut KernelMemory;
        let probe = HostRun::with_alignment(8192, 8192)?;
        let dom = rig.new_domain()?;
        let mut tracker = DmaTracker::new(UnmapStrategy::default(), probe.start);
        tracker.attach(mem, rig.unit, dom).map_err(|(_, e)| format!("attach: {e}"))?;
        let fgsp = tracker.domains()[0].fgsp();
        for d in
            tracker.teardown(mem, rig.unit, &mut |_| {}).map_err(|e| format!("teardown: {e}"))?
        {
            rig.destroy(d);
        }
        let expected = rig.unit.kind() == "AMD-Vi";
        log::info!("fgsp probe on a {} domain with all page sizes: {fgsp}", rig.unit.kind());
        ensure!(fgsp == expected, "fgsp probe said {fgsp} on {}", rig.unit.kind());
        Ok(())
    }
}

/// 1 GiB, 4K pages, contiguous backing.
pub fn contiguous(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &FgspProbe)?;
    on_edu_unit(ctx, 0, &Teardown { backing: Backing::Contiguous, suppress: false })
}

/// The control: the same contiguous teardown with its invalidations withheld from the
/// unit; the sampled DMAs must still land.
pub fn control(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &Teardown { backing: Backing::Contiguous, suppress: true })
}

/// 1 GiB, 4K pages, fragmented backing.
pub fn fragmented(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &Teardown { backing: Backing::Fragmented, suppress: false })
}
