//! The DMA tracker's fine-grained-superpage probe on real tables: attach reports fgsp
//! true on AMD-Vi (unmapping 4K of an 8K NextLevel-7 page returns the whole page) and
//! false on VT-d, probes in a free hole (never IOVA 0, never a recorded mapping), and
//! leaves the domain's tables holding exactly the replayed mappings.

use super::translation::HostRun;
use super::{on_edu_unit, IommuTest, Rig};
use crate::ensure;
use crate::iommu::Units;
use crate::mem::KernelMemory;
use crate::testing::{TestContext, TestResult};
use alloc::format;
use alloc::vec::Vec;
use iommu::error::HwError;
use iommu::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use iommu::pgtable::{LeafRun, Prot};
use iommu::tracker::{DmaTracker, HostExtent, UnmapStrategy, DEFAULT_RESERVED};
use iommu::unit::RemappingUnit;

/// Passes invalidations on to the unit and remembers the blocks (where the probe was).
struct Recording<'a, I: IotlbInvalidator> {
    inner: &'a mut I,
    blocks: Vec<IovaBlock>,
    domain_wide: u32,
}

impl<I: IotlbInvalidator> IotlbInvalidator for Recording<'_, I> {
    fn max_block_order(&self) -> u32 {
        self.inner.max_block_order()
    }
    fn after_map(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        self.inner.after_map(domain, block)
    }
    fn invalidate_block(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        self.blocks.push(block);
        self.inner.invalidate_block(domain, block)
    }
    fn invalidate_domain(&mut self, domain: DomainId) -> Result<(), HwError> {
        self.domain_wide += 1;
        self.inner.invalidate_domain(domain)
    }
    fn sync(&mut self) -> Result<(), HwError> {
        self.inner.sync()
    }
}

/// The first IOVA the probe could use: a recorded mapping sits there, so the probe
/// must go elsewhere.
const RECORDED_IOVA: u64 = DEFAULT_RESERVED[0].1;
const RECORDED_LEN: u64 = 8192;

struct ProbeOnAttach {
    expect_fgsp: bool,
}

impl IommuTest for ProbeOnAttach {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let probe_pair = HostRun::aligned(8192)?;
        let backing = HostRun::aligned(RECORDED_LEN)?;
        let mem = &mut KernelMemory;
        let mut tracker = DmaTracker::new(UnmapStrategy::default(), probe_pair.start);
        let extent = HostExtent { paddr: backing.start, len: RECORDED_LEN };
        tracker
            .map_dma(mem, rig.unit, RECORDED_IOVA, &[extent], Prot::READ | Prot::WRITE)
            .map_err(|e| format!("map_dma: {e}"))?;
        let mappings = tracker.mapping_count();
        let dom = rig.new_domain()?;
        let mut rec = Recording { inner: &mut *rig.unit, blocks: Vec::new(), domain_wide: 0 };
        let index = tracker.attach(mem, &mut rec, dom).map_err(|(dom, e)| {
            dom.destroy(&mut KernelMemory);
            format!("attach: {e}")
        })?;
        let (blocks, domain_wide) = (rec.blocks, rec.domain_wide);
        let result = (|| -> TestResult {
            let dom = &tracker.domains()[index];
            log::info!(
                "fgsp probe on {}: fgsp {}, invalidated {blocks:x?} (+{domain_wide} domain-wide)",
                rig.unit.kind(),
                dom.fgsp()
            );
            ensure!(
                dom.fgsp() == self.expect_fgsp,
                "the probe says fgsp {} on {}",
                dom.fgsp(),
                rig.unit.kind()
            );
            let hole =
                blocks.iter().map(|b| b.iova).min().ok_or("the probe invalidated nothing")?;
            let end = blocks.iter().map(|b| b.iova + b.size()).max().unwrap_or(hole);
            ensure!(end - hole == 8192 && hole % 8192 == 0, "probe range {hole:#x}..{end:#x}");
            for (s, e) in DEFAULT_RESERVED
                .iter()
                .copied()
                .chain([(RECORDED_IOVA, RECORDED_IOVA + RECORDED_LEN)])
            {
                ensure!(hole >= e || end <= s, "the probe used {hole:#x}, inside {s:#x}..{e:#x}");
            }
            for iova in [hole, hole + 4096] {
                ensure!(dom.iova_to_phys(mem, iova).is_none(), "probe IOVA {iova:#x} still mapped");
            }
            ensure!(tracker.mapping_count() == mappings, "attach changed the mapping count");
            let mut runs: Vec<LeafRun> = Vec::new();
            dom.table().for_each_run(mem, 0, dom.table().aperture(), |r| runs.push(r));
            let want = LeafRun {
                iova: RECORDED_IOVA,
                paddr: backing.start,
                size: RECORDED_LEN,
                prot: Prot::READ | Prot::WRITE,
            };
            ensure!(runs == [want], "after attach the tables hold {runs:x?}, want only {want:x?}");
            Ok(())
        })();
        let dom = tracker.detach(mem, rig.unit, index).map_err(|e| format!("detach: {e}"))?;
        rig.destroy(dom);
        result
    }
}

/// fgsp is true on AMD-Vi and false on VT-d, found by the tracker's attach.
pub fn probe(ctx: &mut TestContext<'_>) -> TestResult {
    let expect_fgsp = matches!(ctx.platform.iommu.units, Units::Amd(_));
    on_edu_unit(ctx, 0, &ProbeOnAttach { expect_fgsp })
}
