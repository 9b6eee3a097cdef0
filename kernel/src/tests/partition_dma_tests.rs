//! The guest program's DMA path, end to end, through a real IOMMU domain: a test-only
//! by-hand version of `Partition::attach_device` (a domain from the test rig rather than
//! the partition's tracker), kept as an independent check of the same path.
//! The domain maps the partition's whole memory guest-physical -> host-physical, the edu
//! device is attached to it and its BAR passed through, and the guest copies within its
//! memory and tries to read beyond it.
#![deny(unsafe_code)]

use super::iommu::{on_edu_unit, IommuTest, Rig};
use crate::ensure;
use crate::partition::{Budget, Partition, Stop, BUILTIN_GUEST};
use crate::pci::PciFunction;
use crate::testing::{TestContext, TestResult};
use alloc::format;
use boot::partition_config::{Backing, PartitionSpec};
use guest::check;
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

struct GuestDma {
    function: PciFunction,
    backing: Backing,
}

impl IommuTest for GuestDma {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let spec = PartitionSpec::new("dma", 8 << 20, self.backing);
        let mut p = Partition::create(&spec, BUILTIN_GUEST).map_err(|e| format!("create: {e}"))?;
        let mut dom = rig.new_domain()?;
        let runs: alloc::vec::Vec<_> = p.memory().ok_or("no memory")?.contiguous_runs().collect();
        for &(gpa, hpa, len) in &runs {
            rig.map(&mut dom, gpa, hpa, len, Prot::READ | Prot::WRITE)?;
        }
        rig.attach(&dom)?;
        p.assign_device(&self.function).map_err(|e| format!("assign: {e}"))?;
        if let Some(d) = p.device.as_mut() {
            d.dma_allowed = true;
        }
        let r = p.run(Budget::DEFAULT).map_err(|e| format!("run: {e}"))?;
        log::info!(
            "partition dma ({} backing, {} runs): {:?} after {} exits in {} ticks, reports {:?}",
            self.backing,
            runs.len(),
            r.stop,
            r.exits,
            r.ticks,
            p.reports
        );
        // Teardown in the lifecycle's order: device blocked and invalidated, then memory.
        rig.retire(dom)?;
        let own = p.reported(check::DMA_OWN_MATCHED);
        let outside = p.reported(check::DMA_OUTSIDE_NONZERO);
        p.destroy();
        ensure!(r.stop == Stop::Done(0), "guest ended with {:?}", r.stop);
        ensure!(own == Some(2048), "edu copy within guest memory matched {own:?} of 2048 bytes");
        ensure!(outside == Some(0), "edu read {outside:?} nonzero bytes beyond guest memory");
        Ok(())
    }
}

fn guest_dma(ctx: &mut TestContext<'_>, backing: Backing) -> TestResult {
    let edu = ctx.platform.edus.first().ok_or("no edu device")?.bdf;
    let function =
        ctx.platform.pci.iter().find(|f| f.bdf == edu).ok_or("edu not enumerated")?.clone();
    on_edu_unit(ctx, 0, &GuestDma { function, backing })
}

/// 4K-backed partition: the guest's edu DMA lands in its own memory, not beyond it.
pub fn guest_dma_4k(ctx: &mut TestContext<'_>) -> TestResult {
    guest_dma(ctx, Backing::Pages4K)
}

/// The same with 2M backing.
pub fn guest_dma_2m(ctx: &mut TestContext<'_>) -> TestResult {
    guest_dma(ctx, Backing::Pages2M)
}
