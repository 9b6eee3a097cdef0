//! Re-attach: a device moved from domain A to domain B follows B's tables at once. Both
//! domains map the same IOVAs to different host frames; after the move the same DMA reads
//! B's source and writes B's destination, and A's frames keep what they held.

use super::{on_edu_unit, IommuTest, Rig};
use crate::ensure;
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::TestFrame;
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

const SRC_IOVA: u64 = 0x2000_0000;
const DST_IOVA: u64 = 0x2000_1000;
const LEN: usize = 600;

struct Reattach;

impl IommuTest for Reattach {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let (src_a, dst_a) = (TestFrame::patterned(0x11), TestFrame::patterned(0xA0));
        let (src_b, dst_b) = (TestFrame::patterned(0x22), TestFrame::patterned(0xB0));
        let mut a = rig.new_domain()?;
        let mut b = rig.new_domain()?;
        let rw = Prot::READ | Prot::WRITE;
        rig.map(&mut a, SRC_IOVA, src_a.0, 4096, Prot::READ)?;
        rig.map(&mut a, DST_IOVA, dst_a.0, 4096, rw)?;
        rig.map(&mut b, SRC_IOVA, src_b.0, 4096, Prot::READ)?;
        rig.map(&mut b, DST_IOVA, dst_b.0, 4096, rw)?;
        let result = (|| -> TestResult {
            rig.attach(&a)?;
            rig.copy(SRC_IOVA, DST_IOVA, LEN)?;
            ensure!(dst_a.holds(0x11, 0, 0, LEN as u64), "in domain A the DMA did not land");
            ensure!(dst_b.holds(0xB0, 0, 0, 4096), "in domain A the DMA touched B's frame");
            // A's translations are now cached; the move must not use them.
            dst_a.fill(0xA0);
            rig.attach(&b)?;
            rig.copy(SRC_IOVA, DST_IOVA, LEN)?;
            ensure!(
                dst_b.holds(0x22, 0, 0, LEN as u64),
                "after the move to domain B the DMA did not read and write B's frames"
            );
            ensure!(dst_a.holds(0xA0, 0, 0, 4096), "after the move A's frame was written");
            ensure!(
                src_a.holds(0x11, 0, 0, 4096) && src_b.holds(0x22, 0, 0, 4096),
                "a source changed"
            );
            log::info!(
                "reattach: domain {} -> {}: IOVA {DST_IOVA:#x} now lands in {:#x}, not {:#x}",
                a.id(),
                b.id(),
                dst_b.0,
                dst_a.0
            );
            Ok(())
        })();
        // B is the device's domain now: retiring it blocks the device; A only needs its
        // cached translations dropped before its tables go.
        rig.retire(b)?;
        rig.destroy(a)?;
        result
    }
}

/// The first edu device moves from one domain to another and follows the new tables.
pub fn reattach(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &Reattach)
}
