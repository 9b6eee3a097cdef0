//! Translation proven by data that lands: edu copies between two IOVAs and the bytes
//! arrive in the host frames those IOVAs map to, through 4K, 2M and 1G pages, above 4 GiB.

use super::{on_edu_unit, IommuTest, Rig};
use crate::ensure;
use crate::mem::frames;
use crate::testing::{TestContext, TestResult};
use crate::tests::dma::{region_fill, region_holds, TestFrame};
use iommu::domain::Domain;
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

/// A contiguous, aligned host run owned by a test, freed on drop.
pub struct HostRun {
    /// First byte.
    pub start: u64,
    pages: u64,
}

impl HostRun {
    /// `size` bytes aligned to `size` (falls back to an error when memory is short).
    pub fn aligned(size: u64) -> Result<HostRun, alloc::string::String> {
        Self::with_alignment(size, size)
    }

    /// `size` bytes starting at a multiple of `align`.
    pub fn with_alignment(size: u64, align: u64) -> Result<HostRun, alloc::string::String> {
        let pages = size / 4096;
        let start = frames::alloc_contiguous(pages, align)
            .ok_or_else(|| alloc::format!("no {align:#x}-aligned run of {size:#x} bytes free"))?;
        Ok(HostRun { start, pages })
    }
}

impl Drop for HostRun {
    fn drop(&mut self) {
        frames::free_contiguous(self.start, self.pages);
    }
}

/// Maps `size` bytes at `iova` onto a fresh aligned host run, DMAs a pattern from a 4K
/// source page into the run at `offset`, and checks it landed exactly there.
pub(crate) struct LandsThrough {
    /// Bytes mapped (and the host run's alignment).
    pub size: u64,
    /// Where they are mapped.
    pub iova: u64,
    /// Where in the run the DMA writes (1024 bytes from here must lie inside it).
    pub offset: u64,
}

impl IommuTest for LandsThrough {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        self.run_checking_tables(rig, |_| Ok(()))
    }
}

impl LandsThrough {
    /// As [`IommuTest::run`], with `tables` judging the domain's tables after the map
    /// and before any DMA: for checks of how the mapping was encoded.
    pub(crate) fn run_checking_tables<U: RemappingUnit>(
        &self,
        rig: &mut Rig<'_, U>,
        tables: impl FnOnce(&Domain<U::Format>) -> TestResult,
    ) -> TestResult {
        let run = HostRun::aligned(self.size)?;
        let at = run.start + self.offset;
        region_fill(at, 1024, 0x55);
        let src = TestFrame::patterned(0x21);
        // The source IOVA is the physical address of a sentinel frame: were the DMA not
        // translated, it would read the sentinel instead of `src`.
        let sentinel = TestFrame::patterned(0x77);
        let src_iova = sentinel.0;
        let mut dom = rig.new_domain()?;
        rig.map(&mut dom, src_iova, src.0, 4096, Prot::READ)?;
        rig.map(&mut dom, self.iova, run.start, self.size, Prot::READ | Prot::WRITE)?;
        let walked = dom.iova_to_phys(&crate::mem::KernelMemory, self.iova + self.offset);
        ensure!(
            walked == Some(at),
            "the tables translate {:#x} to {walked:x?}",
            self.iova + self.offset
        );
        if let Err(e) = tables(&dom) {
            rig.retire(dom)?;
            return Err(e);
        }
        rig.attach(&dom)?;
        let copied = rig.copy(src_iova + 8, self.iova + self.offset, 1000);
        let landed = region_holds(at, 1000, 0x21, 8);
        let after_untouched = region_holds(at + 1000, 24, 0x55, 1000);
        rig.retire(dom)?;
        copied?;
        ensure!(landed, "the data did not land at host {at:#x}");
        ensure!(after_untouched, "bytes after the copy at host {:#x} changed", at + 1000);
        ensure!(sentinel.holds(0x77, 0, 0, 4096), "the untranslated sentinel frame was touched");
        Ok(())
    }
}

/// 4 KiB pages at an IOVA below 4 GiB.
pub fn four_k(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &LandsThrough { size: 4096, iova: 0x1234_5000, offset: 0x100 })
}

/// A 2 MiB page at an IOVA above 4 GiB, written near its end.
pub fn two_m(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &LandsThrough { size: 2 << 20, iova: 0x1_4020_0000, offset: 0x1F_F000 })
}

/// A 1 GiB page at an IOVA above 4 GiB, written in its middle (needs a 1 GiB-aligned free
/// GiB of RAM: boot QEMU with at least 3 GiB).
pub fn one_g(ctx: &mut TestContext<'_>) -> TestResult {
    on_edu_unit(ctx, 0, &LandsThrough { size: 1 << 30, iova: 0x40_0000_0000, offset: 0x2345_6000 })
}
