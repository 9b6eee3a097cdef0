//! Invalidation proven with DMA: map, DMA (the translation is now cached), unmap and
//! invalidate, DMA again: no data may move. The control runs the same sequence with the
//! invalidation suppressed and must see the stale translation still working, so these
//! tests can fail.

use super::{on_edu_unit, IommuTest, Rig, SuppressedInvalidation};
use crate::ensure;
use crate::mem::KernelMemory;
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::TestFrame;
use alloc::format;
use iommu::domain::IotlbGather;
use iommu::invalidate::IotlbInvalidator;
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

/// How the unmapped range is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// The domain's gather turned into page-selective invalidations (the normal path).
    PageSelective,
    /// One domain-selective invalidation.
    DomainSelective,
    /// Everything the unit caches.
    Global,
    /// Nothing: the control case.
    Suppressed,
}

struct StaleAfterUnmap(Flush);

const DST_IOVA: u64 = 0x7654_3000;
const LEN: usize = 512;

impl IommuTest for StaleAfterUnmap {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let src = TestFrame::patterned(0x31);
        let dst = TestFrame::patterned(0x99);
        // IOVA = the sentinel's physical address: an untranslated DMA would read it.
        let sentinel = TestFrame::patterned(0x44);
        let x = sentinel.0;
        let mut dom = rig.new_domain()?;
        rig.map(&mut dom, x, src.0, 4096, Prot::READ)?;
        rig.map(&mut dom, DST_IOVA, dst.0, 4096, Prot::READ | Prot::WRITE)?;
        rig.attach(&dom)?;
        let result = (|| -> TestResult {
            rig.copy(x, DST_IOVA, LEN)?;
            ensure!(dst.holds(0x31, 0, 0, LEN as u64), "the warm-up DMA did not land");
            dst.fill(0x99);
            let mut gather = IotlbGather::new();
            let mem = &mut KernelMemory;
            dom.unmap(mem, x, 4096, &mut gather).map_err(|e| format!("unmap: {e}"))?;
            let before = rig.unit.invalidations_issued();
            match self.0 {
                Flush::PageSelective => {
                    let stats =
                        dom.flush(mem, &mut gather, rig.unit).map_err(|e| format!("flush: {e}"))?;
                    ensure!(
                        stats.blocks >= 1 && stats.domain_wide == 0,
                        "not page-selective: {stats:?}"
                    );
                }
                Flush::DomainSelective => {
                    rig.unit.invalidate_domain(dom.id()).map_err(|e| format!("{e}"))?;
                    rig.unit.sync().map_err(|e| format!("{e}"))?;
                    dom.flush(mem, &mut gather, &mut SuppressedInvalidation)
                        .map_err(|e| format!("{e}"))?;
                }
                Flush::Global => {
                    rig.unit.invalidate_everything().map_err(|e| format!("{e}"))?;
                    dom.flush(mem, &mut gather, &mut SuppressedInvalidation)
                        .map_err(|e| format!("{e}"))?;
                }
                Flush::Suppressed => {}
            }
            let issued = rig.unit.invalidations_issued() - before;
            ensure!(dom.iova_to_phys(mem, x).is_none(), "the tables still translate {x:#x}");
            rig.copy(x, DST_IOVA, LEN)?;
            let stale = dst.holds(0x31, 0, 0, LEN as u64);
            log::info!("{:?}: {issued} invalidations, stale translation used: {stale}", self.0);
            if self.0 == Flush::Suppressed {
                ensure!(
                    stale,
                    "control: with no invalidation the IOTLB should still translate {x:#x}"
                );
                // Now invalidate for real: the same DMA must stop working.
                dst.fill(0x99);
                dom.flush(mem, &mut gather, rig.unit).map_err(|e| format!("flush: {e}"))?;
                rig.copy(x, DST_IOVA, LEN)?;
                ensure!(!dst.holds(0x31, 0, 0, LEN as u64), "the late invalidation did not take");
            } else {
                ensure!(issued >= 1, "no invalidation was issued");
                ensure!(
                    !stale,
                    "after unmap and {:?} invalidation the DMA still read the old page",
                    self.0
                );
            }
            ensure!(sentinel.holds(0x44, 0, 0, 4096), "the sentinel frame was touched");
            Ok(())
        })();
        rig.retire(dom)?;
        result
    }
}

/// Page-selective invalidation from the domain's gather.
pub fn page_selective(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &StaleAfterUnmap(Flush::PageSelective))
}

/// Domain-selective invalidation.
pub fn domain_selective(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &StaleAfterUnmap(Flush::DomainSelective))
}

/// Global invalidation.
pub fn global(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &StaleAfterUnmap(Flush::Global))
}

/// The control: no invalidation, the stale translation keeps working.
pub fn suppressed_control(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &StaleAfterUnmap(Flush::Suppressed))
}
