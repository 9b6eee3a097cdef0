//! Firmware-reserved memory kept reachable: the bring-up helper that gives an RMRR/IVMD
//! device its identity domain, run on the second edu with synthetic regions (QEMU has no
//! RMRR). DMA into a reserved page lands at the same physical address; DMA next to it,
//! or a write to a read-only region, moves nothing.

use super::{on_edu_unit, IommuTest, Rig};
use crate::ensure;
use crate::iommu::identity::{attach_identity, IdentityRange};
use crate::iommu::service_faults;
use crate::mem::KernelMemory;
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::TestFrame;
use alloc::format;
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

const LEN: usize = 1024;
const SOURCE: u8 = 0x1b;
const TARGET: u8 = 0x6e;
const READ_ONLY: u8 = 0xd4;
const OUTSIDE: u8 = 0x87;

struct ReservedIdentity;

impl IommuTest for ReservedIdentity {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let source = TestFrame::patterned(SOURCE);
        let target = TestFrame::patterned(TARGET);
        let read_only = TestFrame::patterned(READ_ONLY);
        let outside = TestFrame::patterned(OUTSIDE);
        let rw = Prot::READ | Prot::WRITE;
        let ranges = [
            IdentityRange { start: source.0, end: source.0 + 4095, prot: rw },
            // Unaligned and inside one page, as firmware may state it: the whole page.
            IdentityRange { start: target.0 + 0x10, end: target.0 + 0x2f, prot: rw },
            IdentityRange { start: read_only.0, end: read_only.0 + 4095, prot: Prot::READ },
        ];
        let dom = attach_identity(rig.unit, rig.unit_index, rig.ids, &[rig.rid], &ranges)?;
        let result = (|| -> TestResult {
            let mem = &KernelMemory;
            for f in [&source, &target, &read_only] {
                let got = dom.iova_to_phys(mem, f.0);
                ensure!(got == Some(f.0), "{:#x} translates to {got:x?}, not to itself", f.0);
            }
            ensure!(dom.iova_to_phys(mem, outside.0).is_none(), "a page outside is mapped");
            let edu = &mut *rig.edu;
            let dma = |e| format!("edu: {e}");
            edu.read_from_memory(source.0, 0, LEN).map_err(dma)?;
            edu.write_to_memory(target.0, 0, LEN).map_err(dma)?;
            edu.write_to_memory(outside.0, 0, LEN).map_err(dma)?;
            edu.write_to_memory(read_only.0, 0, LEN).map_err(dma)?;
            ensure!(
                target.holds(SOURCE, 0, 0, LEN as u64),
                "DMA from one reserved page to another did not land 1:1"
            );
            ensure!(outside.holds(OUTSIDE, 0, 0, 4096), "DMA outside the reserved ranges landed");
            ensure!(
                read_only.holds(READ_ONLY, 0, 0, 4096),
                "a read-only reserved range was written"
            );
            ensure!(source.holds(SOURCE, 0, 0, 4096), "the source range changed");
            Ok(())
        })();
        rig.retire(dom)?;
        result
    }
}

/// The identity-domain helper on the second edu (the first may be a partition's).
pub fn identity_domain(ctx: &mut TestContext<'_>) -> TestResult {
    let result = on_edu_unit(ctx, 1, &ReservedIdentity);
    // The refused writes left fault records (VT-d) or events: not for later tests.
    let sum = service_faults(&mut ctx.platform.iommu, |_| {});
    log::info!("reserved identity: {} faults from the refused writes", sum.faults);
    result
}
