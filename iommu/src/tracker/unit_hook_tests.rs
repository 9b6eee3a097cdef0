//! The tracker against units that fail or need telling: a second unit whose invalidations
//! fail, and a caching-mode unit that must hear of every map.

use alloc::vec::Vec;

use super::*;
use crate::invalidate::{DomainId, IovaBlock};
use crate::model::{HostMemory, ModelIommu, ModelKind};
use crate::pgtable::vtd::VtdFormat;

const HOST_BASE: u64 = 0x80_0000_0000;

/// Two model units, one per domain's unit number.
struct TwoUnits {
    good: ModelIommu,
    second: ModelIommu,
}

impl InvalidatorSet for TwoUnits {
    fn unit(&mut self, unit: usize) -> &mut dyn IotlbInvalidator {
        if unit == 0 {
            &mut self.good
        } else {
            &mut self.second
        }
    }
}

#[test]
fn failed_second_domain_flush_quarantines_every_taken_page() {
    for strategy in [UnmapStrategy::Gathered, UnmapStrategy::SeedChunked] {
        let mut mem = HostMemory::new();
        let mut units = TwoUnits {
            good: ModelIommu::new(ModelKind::Vtd { sllps: 0 }),
            second: ModelIommu::new(ModelKind::Vtd { sllps: 0 }),
        };
        let mut t = DmaTracker::new(strategy, 0x7F_0000_0000);
        for unit in 0..2 {
            let d = Domain::new(&mut mem, 1, unit, VtdFormat::new(3, 0).unwrap()).unwrap();
            t.attach(&mut mem, &mut units, d).unwrap();
        }
        let a = [HostExtent { paddr: HOST_BASE, len: 0x4000 }];
        let b = [HostExtent { paddr: HOST_BASE + 0x10_0000, len: 0x2000 }];
        t.map_dma(&mut mem, &mut units, 0x10_0000, &a, Prot::READ).unwrap();
        t.map_dma(&mut mem, &mut units, 0x20_0000, &b, Prot::READ).unwrap();
        units.second.fail_sync = true;
        let mut released = Vec::new();
        let err = t.unmap_dma(&mut mem, &mut units, 0, 1 << 30, &mut |e| released.push(e));
        assert!(err.is_err(), "{strategy:?}");
        assert!(released.is_empty(), "{strategy:?}: nothing released before invalidation");
        assert_eq!(t.unreleased_bytes(), 0x6000, "{strategy:?}: no page lost");
        for d in t.domains() {
            assert_eq!(d.iova_to_phys(&mem, 0x10_0000), None, "{strategy:?}");
            assert_eq!(d.iova_to_phys(&mem, 0x20_0000), None, "{strategy:?}");
        }
        assert!(t.retry_release(&mut mem, &mut units, &mut |e| released.push(e)).is_err());
        units.second.fail_sync = false;
        t.retry_release(&mut mem, &mut units, &mut |e| released.push(e)).unwrap();
        assert_eq!(released.iter().map(|e| e.len).sum::<u64>(), 0x6000, "{strategy:?}");
        assert_eq!(t.unreleased_bytes(), 0);
    }
}

#[test]
fn detach_whose_flush_fails_keeps_the_domain_attached() {
    let mut mem = HostMemory::new();
    let mut units = TwoUnits {
        good: ModelIommu::new(ModelKind::Vtd { sllps: 0 }),
        second: ModelIommu::new(ModelKind::Vtd { sllps: 0 }),
    };
    let mut t = DmaTracker::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    for unit in 0..2 {
        let d = Domain::new(&mut mem, 1, unit, VtdFormat::new(3, 0).unwrap()).unwrap();
        t.attach(&mut mem, &mut units, d).unwrap();
    }
    let a = [HostExtent { paddr: HOST_BASE, len: 0x4000 }];
    t.map_dma(&mut mem, &mut units, 0x10_0000, &a, Prot::READ).unwrap();
    units.second.fail_sync = true;
    assert!(t.detach(&mut mem, &mut units, 1).is_err());
    assert_eq!(t.domains().len(), 2, "the domain whose flush failed is still listed");
    units.second.fail_sync = false;
    let d = t.detach(&mut mem, &mut units, 1).unwrap();
    assert_eq!(d.unit(), 1);
    assert_eq!(d.iova_to_phys(&mem, 0x10_0000), None);
    assert_eq!(t.domains().len(), 1);
}

/// A caching-mode-like unit: records every after-map call and invalidates the block.
struct CachingMode {
    model: ModelIommu,
    after_maps: Vec<(DomainId, IovaBlock)>,
}

impl IotlbInvalidator for CachingMode {
    fn max_block_order(&self) -> u32 {
        self.model.max_order
    }
    fn invalidate_block(&mut self, d: DomainId, b: IovaBlock) -> Result<(), HwError> {
        self.model.invalidate_block(d, b)
    }
    fn invalidate_domain(&mut self, d: DomainId) -> Result<(), HwError> {
        self.model.invalidate_domain(d)
    }
    fn sync(&mut self) -> Result<(), HwError> {
        self.model.sync()
    }
    fn after_map(&mut self, d: DomainId, b: IovaBlock) -> Result<(), HwError> {
        self.after_maps.push((d, b));
        self.model.invalidate_block(d, b)?;
        self.model.sync()
    }
}

#[test]
fn caching_mode_unit_hears_of_every_map_and_replay() {
    let mut inv =
        CachingMode { model: ModelIommu::new(ModelKind::Vtd { sllps: 0 }), after_maps: Vec::new() };
    let mut mem = HostMemory::new();
    let mut t = DmaTracker::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    let ext = [HostExtent { paddr: HOST_BASE, len: 0x3000 }];
    // Mapped before any domain: the replay at attach must report it.
    t.map_dma(&mut mem, &mut inv, 0x10_0000, &ext, Prot::READ).unwrap();
    let d = Domain::new(&mut mem, 4, 0, VtdFormat::new(3, 0).unwrap()).unwrap();
    t.attach(&mut mem, &mut inv, d).unwrap();
    let replay = inv.after_maps.clone();
    assert_eq!(replay.len(), 1);
    let (dom, block) = replay[0];
    assert_eq!(dom, 4);
    assert!(block.iova <= 0x10_0000 && block.iova + block.size() >= 0x10_3000, "{block:?}");
    // Mapped after attach: reported too.
    let ext = [HostExtent { paddr: HOST_BASE + 0x10_0000, len: 0x1000 }];
    t.map_dma(&mut mem, &mut inv, 0x40_0000, &ext, Prot::READ).unwrap();
    assert_eq!(inv.after_maps[1..], [(4, IovaBlock { iova: 0x40_0000, order: 12 })]);
}
