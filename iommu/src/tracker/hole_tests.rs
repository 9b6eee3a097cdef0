//! The two holes a review found in release-after-flush, closed in the types: a `map_dma`
//! rollback that stopped at the first failed flush, and a `retry_release` after a per-call
//! teardown that released quarantined pages with no invalidation.

use alloc::vec::Vec;
use core::cell::RefCell;

use super::*;
use crate::model::{HostMemory, ModelIommu, ModelKind, SharedModel};
use crate::pgtable::vtd::VtdFormat;

const HOST_BASE: u64 = 0x80_0000_0000;

/// Unit 0 and unit 1 of a machine.
struct UnitSet<'a> {
    slot: [SharedModel<'a>; 2],
}

impl<'a> UnitSet<'a> {
    fn new(a: &'a RefCell<ModelIommu>, b: &'a RefCell<ModelIommu>) -> Self {
        Self { slot: [SharedModel::new(a), SharedModel::new(b)] }
    }
}

impl InvalidatorSet for UnitSet<'_> {
    fn unit(&mut self, unit: usize) -> &mut dyn IotlbInvalidator {
        &mut self.slot[unit.min(1)]
    }
}

/// Fills both units' IOTLBs with every page of `[iova, iova + len)` in every domain.
fn touch(t: &DmaTracker<VtdFormat>, mem: &HostMemory, units: &UnitSet, iova: u64, len: u64) {
    for d in t.domains() {
        let unit = units.slot[d.unit().min(1)].model;
        unit.borrow_mut().set_context(d.id(), d.root(), d.levels());
        for va in (iova..iova + len).step_by(PAGE_SIZE as usize) {
            assert!(unit.borrow_mut().translate(mem, d.id(), va, Prot::READ).is_ok());
        }
    }
}

/// The rollback of a `map_dma` that failed on its third domain, while the first
/// domain's flush fails: every domain it reached is cleared (not only those before the
/// failed flush), and the caller's pages are quarantined, coming back only after a
/// completed invalidation of every domain that mapped them.
#[test]
fn map_rollback_clears_every_domain_and_quarantines_pages_a_failed_flush_left() {
    let (a, b) = (
        RefCell::new(ModelIommu::new(ModelKind::Vtd { sllps: 0 })),
        RefCell::new(ModelIommu::new(ModelKind::Vtd { sllps: 0 })),
    );
    let mut units = UnitSet::new(&a, &b);
    let mut mem = HostMemory::new();
    let mut t = DmaTracker::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    let wide = VtdFormat::new(4, 0).unwrap();
    let narrow = VtdFormat::new(4, 0).unwrap().with_address_width(30);
    for (id, unit, fmt) in [(1, 0, wide), (2, 1, wide), (3, 1, narrow)] {
        let d = Domain::new(&mut mem, id, unit, fmt).unwrap();
        t.attach(&mut mem, &mut units, d).unwrap();
    }
    // Above the narrow domain's 1 GiB aperture: domains 1 and 2 map it, domain 3 refuses.
    let iova = 1 << 31;
    let ext = [HostExtent { paddr: HOST_BASE, len: 0x3000 }];
    a.borrow_mut().fail_sync = true;
    let err = t.map_dma(&mut mem, &mut units, iova, &ext, Prot::READ);
    assert!(matches!(err, Err(TrackerError::Hw(_))), "{err:?}");
    for d in t.domains() {
        assert_eq!(d.iova_to_phys(&mem, iova), None, "domain {} still maps the pages", d.id());
    }
    assert_eq!(t.mapping_count(), 0);
    assert_eq!(t.unreleased_bytes(), 0x3000, "the caller's pages are held, not given back");
    let released = RefCell::new(Vec::new());
    let mut release = |e: HostExtent| {
        assert!(a.borrow().cached_targets(e.paddr, e.len).is_empty());
        assert!(b.borrow().cached_targets(e.paddr, e.len).is_empty());
        released.borrow_mut().push(e);
    };
    assert!(t.retry_release(&mut mem, &mut units, &mut release).is_err(), "unit 0 still fails");
    assert!(released.borrow().is_empty());
    a.borrow_mut().fail_sync = false;
    t.retry_release(&mut mem, &mut units, &mut release).unwrap();
    assert_eq!(released.borrow().as_slice(), ext);
    assert_eq!(t.unreleased_bytes(), 0);
}

/// A per-call teardown whose chunk flush fails, then a teardown that succeeds and hands
/// the domains back, then `retry_release` with no domain left attached: the quarantined
/// pages are owed by their domains, not by whatever is attached, so the retry invalidates
/// them (domain-wide) before any page comes back, and the IOTLB is clean at release.
#[test]
fn retry_after_a_per_call_teardown_invalidates_the_domains_the_pages_are_owed_by() {
    for strategy in
        [UnmapStrategy::PageByPage, UnmapStrategy::SeedChunked, UnmapStrategy::Linux2018]
    {
        let (a, b) = (
            RefCell::new(ModelIommu::new(ModelKind::Vtd { sllps: 0 })),
            RefCell::new(ModelIommu::new(ModelKind::Vtd { sllps: 0 })),
        );
        let mut units = UnitSet::new(&a, &b);
        let mut mem = HostMemory::new();
        let mut t = DmaTracker::new(strategy, 0x7F_0000_0000);
        let d = Domain::new(&mut mem, 7, 0, VtdFormat::new(3, 0).unwrap()).unwrap();
        t.attach(&mut mem, &mut units, d).unwrap();
        let ext = [
            HostExtent { paddr: HOST_BASE, len: 0x2000 },
            HostExtent { paddr: HOST_BASE + 0x10_0000, len: 0x2000 },
        ];
        t.map_dma(&mut mem, &mut units, 0x40_0000, &ext, Prot::READ).unwrap();
        touch(&t, &mem, &units, 0x40_0000, 0x4000);
        let released = RefCell::new(Vec::<HostExtent>::new());
        let mut release = |e: HostExtent| {
            assert!(
                a.borrow().cached_targets(e.paddr, e.len).is_empty(),
                "{strategy:?}: {e:?} released while cached"
            );
            released.borrow_mut().push(e);
        };
        a.borrow_mut().fail_sync = true;
        assert!(t.teardown(&mut mem, &mut units, &mut release).is_err());
        assert!(released.borrow().is_empty());
        a.borrow_mut().fail_sync = false;
        let domains = t.teardown(&mut mem, &mut units, &mut release).unwrap();
        assert!(t.domains().is_empty());
        let before = a.borrow().domain_invalidations;
        t.retry_release(&mut mem, &mut units, &mut release).unwrap();
        assert_eq!(a.borrow().domain_invalidations, before + 1, "{strategy:?}");
        let bytes: u64 = released.borrow().iter().map(|e| e.len).sum();
        assert_eq!(bytes, 0x4000, "{strategy:?}: every page back exactly once");
        assert_eq!(t.unreleased_bytes(), 0);
        for d in domains {
            d.destroy(&mut mem).unwrap();
        }
    }
}

/// The fgsp probe is best effort: a misaligned or zero probe pair means no probe (fgsp
/// false, nothing mapped), and a probe whose flush fails defers its tables and fails the
/// attach instead of freeing them unflushed.
#[test]
fn fgsp_probe_checks_its_pair_and_defers_a_failed_flush() {
    use crate::pgtable::amdv1::AmdV1Format;
    let model = RefCell::new(ModelIommu::new(ModelKind::AmdV1));
    let other = RefCell::new(ModelIommu::new(ModelKind::AmdV1));
    let mut units = UnitSet::new(&model, &other);
    let mut mem = HostMemory::new();
    for pair in [0, 0x7F_0000_1000] {
        let mut t = DmaTracker::new(UnmapStrategy::Gathered, pair);
        let d = Domain::new(&mut mem, 1, 0, AmdV1Format::new(4).unwrap()).unwrap();
        let i = t.attach(&mut mem, &mut units, d).unwrap();
        assert!(!t.domains()[i].fgsp(), "pair {pair:#x}: no probe");
        assert!(model.borrow().log.is_empty(), "pair {pair:#x}: nothing mapped or invalidated");
    }
    let mut t = DmaTracker::<AmdV1Format>::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    let d = Domain::new(&mut mem, 2, 0, AmdV1Format::new(4).unwrap()).unwrap();
    let live = mem.live_frames();
    model.borrow_mut().fail_sync = true;
    let (mut d, err) = t.attach(&mut mem, &mut units, d).err().unwrap();
    assert!(matches!(err, TrackerError::Hw(_)));
    assert!(mem.live_frames() > live, "probe tables kept until an invalidation");
    model.borrow_mut().fail_sync = false;
    d.flush(&mut mem, &mut crate::domain::IotlbGather::new(), &mut SharedModel::new(&model))
        .unwrap();
    assert_eq!(mem.live_frames(), live, "freed after the deferred invalidation completed");
    // A range flush is no proof for the whole domain: destroy refuses until a retire.
    let crate::domain::NotRetired(mut d) = d.destroy(&mut mem).unwrap_err();
    assert_eq!(mem.live_frames(), live, "a refused destroy frees nothing");
    d.retire(&mut mem, &mut SharedModel::new(&model)).unwrap();
    d.destroy(&mut mem).unwrap();
    assert_eq!(mem.live_frames(), live - 1, "the root went with the retired domain");
}
