//! The unmap strategies side by side on a domain with every page size the unit has:
//! 1 GiB of contiguous memory, torn down by Linux's seed chunking (a contiguity search
//! with iova-to-phys per page), by later Linux (the search skipped when the fgsp probe
//! said the domain unmaps whole fine-grained pages), and by this project's default. On
//! AMD-Vi the probe says fgsp and the search disappears; on VT-d it does not. Each
//! teardown is proven by a DMA that lands before it and moves nothing after it.

use super::teardown::IOVA_BASE;
use super::translation::HostRun;
use super::tsc;
use super::{on_edu_unit, IommuTest, Rig};
use crate::ensure;
use crate::mem::KernelMemory;
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::{region_fill, region_holds};
use alloc::format;
use iommu::pgtable::Prot;
use iommu::tracker::{DmaTracker, HostExtent, TrackerCounters, UnmapStrategy};
use iommu::unit::RemappingUnit;

const GIB: u64 = 1 << 30;
/// An IOVA page in the middle of the GiB, and bytes moved per DMA.
const SAMPLE: u64 = 0x1234_5000;
const LEN: usize = 128;

struct Strategies;

/// One strategy's teardown: the tracker's counters, the domain's fgsp and TSC cycles.
fn teardown_with<U: RemappingUnit>(
    rig: &mut Rig<'_, U>,
    strategy: UnmapStrategy,
    run: &HostRun,
    probe: u64,
) -> Result<(TrackerCounters, bool, u64), alloc::string::String> {
    let mem = &mut KernelMemory;
    let mut tracker = DmaTracker::new(strategy, probe);
    let dom = rig.new_domain()?;
    tracker.attach(mem, rig.unit, dom).map_err(|(_, e)| format!("attach: {e}"))?;
    let fgsp = tracker.domains()[0].fgsp();
    let extent = HostExtent { paddr: run.start, len: GIB };
    tracker
        .map_dma(mem, rig.unit, IOVA_BASE, &[extent], Prot::READ | Prot::WRITE)
        .map_err(|e| format!("map_dma: {e}"))?;
    rig.attach(&tracker.domains()[0])?;
    let (iova, host) = (IOVA_BASE + SAMPLE, run.start + SAMPLE);
    region_fill(host, 4096, 0x3C);
    rig.edu.write_to_memory(iova, 0, LEN).map_err(|e| format!("edu: {e}"))?;
    ensure!(!region_holds(host, LEN as u64, 0x3C, 0), "the warm-up DMA did not land");
    region_fill(host, 4096, 0x3C);
    tracker.reset_counters();
    let t0 = tsc();
    let domains =
        tracker.teardown(mem, rig.unit, &mut |_| {}).map_err(|e| format!("teardown: {e}"))?;
    let cycles = tsc() - t0;
    let counters = tracker.counters();
    rig.edu.write_to_memory(iova, 0, LEN).map_err(|e| format!("edu: {e}"))?;
    let moved = !region_holds(host, 4096, 0x3C, 0);
    rig.unit.block_device(rig.rid).map_err(|e| format!("block: {e}"))?;
    for d in domains {
        rig.unit.invalidate_domain(d.id()).map_err(|e| format!("invalidate: {e}"))?;
        rig.unit.sync().map_err(|e| format!("sync: {e}"))?;
        rig.destroy(d);
    }
    ensure!(!moved, "after the {strategy:?} teardown the DMA still landed");
    Ok((counters, fgsp, cycles))
}

impl IommuTest for Strategies {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let run = HostRun::with_alignment(GIB, 2 << 20)?;
        let probe = HostRun::with_alignment(8192, 8192)?;
        let mut results = alloc::vec::Vec::new();
        for s in [UnmapStrategy::SeedChunked, UnmapStrategy::LinuxFgsp, UnmapStrategy::Gathered] {
            let (c, fgsp, cycles) = teardown_with(rig, s, &run, probe.start)?;
            log::info!(
                "strategies: {} {s:?}: fgsp {fgsp}, {} unmap calls, {} table walk steps, {} invalidations, {cycles} TSC cycles",
                rig.unit.kind(),
                c.unmap_calls,
                c.walk_steps,
                c.invalidations
            );
            results.push((c, fgsp));
        }
        let (seed, linux, default) = (results[0].0, results[1].0, results[2].0);
        let amd = rig.unit.kind() == "AMD-Vi";
        ensure!(results.iter().all(|r| r.1 == amd), "fgsp probe said {:?}", results[0].1);
        ensure!(
            default.walk_steps * 100 < seed.walk_steps,
            "the default walked {} entries, the seed's search {}",
            default.walk_steps,
            seed.walk_steps
        );
        if amd {
            ensure!(
                linux.walk_steps * 100 < seed.walk_steps,
                "with fgsp the search should be skipped: {} walk steps vs the seed's {}",
                linux.walk_steps,
                seed.walk_steps
            );
        } else {
            ensure!(
                linux.walk_steps * 2 >= seed.walk_steps,
                "without fgsp Linux searches like the seed: {} vs {}",
                linux.walk_steps,
                seed.walk_steps
            );
        }
        Ok(())
    }
}

/// The three strategies on a full-page-size domain (needs -m 3G).
pub fn side_by_side(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &Strategies)
}
