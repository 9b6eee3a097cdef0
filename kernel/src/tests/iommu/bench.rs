//! `bench_teardown`: the teardown benchmark on the emulated unit. For each unmap strategy
//! it maps 1 GiB with 4 KiB pages (contiguous backing) through the DMA tracker with the
//! edu device attached, tears it down, and prints one parseable line:
//!
//! `bench_teardown: unit=VT-d strategy=default bytes=N measured_bytes=N unmap_calls=N
//! invalidations=N tracker_invalidations=N syncs=N tsc=N`
//!
//! `cargo xtask bench --qemu` reads these lines. Page-by-page costs one invalidation and
//! one wait per page; where that is too slow under TCG it runs on a smaller range
//! (`measured_bytes`) and the counts and cycles are scaled up to `bytes` by the reader.

use super::teardown::{Backing, IOVA_BASE};
use super::translation::HostRun;
use super::tsc;
use super::{on_edu_unit, IommuTest, Rig};
use crate::ensure;
use crate::mem::KernelMemory;
use crate::testing::{TestContext, TestResult};
use alloc::format;
use iommu::invalidate::IovaBlock;
use iommu::pgtable::Prot;
use iommu::tracker::{DmaTracker, UnmapStrategy};
use iommu::unit::RemappingUnit;

const GIB: u64 = 1 << 30;

/// The strategies and the IOVA range each tears down (page-by-page on a slice of it).
const CASES: [(UnmapStrategy, &str, u64); 3] = [
    (UnmapStrategy::PageByPage, "page-by-page", PAGE_BY_PAGE_BYTES),
    (UnmapStrategy::SeedChunked, "seed-chunked", GIB),
    (UnmapStrategy::Gathered, "default", GIB),
];

/// Page-by-page measures this much and is scaled to 1 GiB (linear: one unmap, one
/// invalidation and one wait per page).
const PAGE_BY_PAGE_BYTES: u64 = GIB;

struct Bench;

impl IommuTest for Bench {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let mem = &mut KernelMemory;
        let run = HostRun::with_alignment(GIB, 2 << 20)?;
        let probe = HostRun::with_alignment(8192, 8192)?;
        for (strategy, name, bytes) in CASES {
            let dom = rig.new_domain()?.with_page_sizes(1 << 12);
            let id = dom.id();
            let mut tracker = DmaTracker::new(strategy, probe.start);
            tracker.attach(mem, rig.unit, dom).map_err(|(_, e)| format!("attach: {e}"))?;
            let extents = Backing::Contiguous.extents(run.start);
            let extents = [iommu::tracker::HostExtent { paddr: extents[0].paddr, len: bytes }];
            tracker
                .map_dma(mem, rig.unit, IOVA_BASE, &extents, Prot::READ | Prot::WRITE)
                .map_err(|e| format!("map_dma: {e}"))?;
            let order = 63 - bytes.leading_zeros();
            rig.unit
                .after_map(id, IovaBlock { iova: IOVA_BASE, order })
                .and_then(|()| rig.unit.sync())
                .map_err(|e| format!("after map: {e}"))?;
            rig.attach(&tracker.domains()[0])?;
            tracker.reset_counters();
            let mut released = 0u64;
            let before = rig.unit.invalidations_issued();
            let t0 = tsc();
            let domains = tracker
                .teardown(mem, rig.unit, &mut |e| released += e.len)
                .map_err(|e| format!("teardown: {e}"))?;
            let cycles = tsc() - t0;
            let issued = rig.unit.invalidations_issued() - before;
            let c = tracker.counters();
            rig.unit.block_device(rig.rid).map_err(|e| format!("block: {e}"))?;
            for d in domains {
                rig.unit.invalidate_domain(d.id()).map_err(|e| format!("{e}"))?;
                rig.unit.sync().map_err(|e| format!("{e}"))?;
                rig.destroy(d);
            }
            ensure!(released == bytes, "{name}: released {released} of {bytes} bytes");
            crate::println!(
                "bench_teardown: unit={} strategy={name} bytes={GIB} measured_bytes={bytes} unmap_calls={} invalidations={issued} tracker_invalidations={} syncs={} tsc={cycles}",
                rig.unit.kind(),
                c.unmap_calls,
                c.invalidations,
                c.syncs
            );
        }
        Ok(())
    }
}

/// Tears 1 GiB of 4K mappings down with each strategy and prints the costs.
pub fn bench_teardown(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &Bench)
}
