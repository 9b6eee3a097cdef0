//! Property tests of the tracker against the reference model.

use alloc::vec::Vec;
use core::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::test_layouts::{host_extents, layout, strategy, Layout};
use super::*;
use crate::invalidate::{DomainId, IovaBlock};
use crate::model::{HostMemory, ModelIommu, ModelKind, SharedModel};
use crate::pgtable::amdv1::AmdV1Format;
use crate::pgtable::vtd::VtdFormat;

const SLOT: u64 = 1 << 24; // 16 MiB of IOVA per slot
const SLOTS: u64 = 6;
const HOST_BASE: u64 = 0x80_0000_0000;

#[derive(Debug, Clone)]
enum Op {
    Map { slot: u64, offset_pages: u64, pages: u64, layout: Layout, seed: u64 },
    Unmap { slot: u64 },
    Attach,
    Detach { which: usize },
    Teardown,
    Dma { seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let layout = layout();
    prop_oneof![
        4 => (0..SLOTS, 0..4u64, 1..1100u64, layout, any::<u64>()).prop_map(|(slot, o, pages, layout, seed)| Op::Map {
            slot,
            offset_pages: o * 512,
            pages,
            layout,
            seed
        }),
        2 => (0..SLOTS).prop_map(|slot| Op::Unmap { slot }),
        1 => Just(Op::Attach),
        1 => (0..3usize).prop_map(|which| Op::Detach { which }),
        1 => Just(Op::Teardown),
        3 => any::<u64>().prop_map(|seed| Op::Dma { seed }),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Fmt {
    Vtd3,
    Vtd4,
    Amd3,
    Amd4,
}

fn run<F: PteFormat>(
    format: F,
    kind: ModelKind,
    full_sizes: bool,
    strategy: UnmapStrategy,
    ops: &[Op],
) {
    let model = RefCell::new(ModelIommu::new(kind));
    if matches!(kind, ModelKind::Vtd { .. }) {
        model.borrow_mut().max_order = 12 + 9;
    }
    let mut inv = SharedModel::new(&model);
    let mut mem = HostMemory::strict();
    let mut tracker = DmaTracker::<F>::new(strategy, 0x7F_0000_0000);
    // IOVA -> (paddr, prot) for every mapped page: the plain map.
    let mut plain: BTreeMap<u64, u64> = BTreeMap::new();
    let mut slots: BTreeMap<u64, (u64, u64, Vec<HostExtent>)> = BTreeMap::new();
    let mut owned: BTreeMap<u64, u64> = BTreeMap::new(); // host paddr -> len still pinned
    let mut next_host = HOST_BASE;
    let mut next_id: DomainId = 1;
    let released = RefCell::new(Vec::<HostExtent>::new());
    let mut release = |e: HostExtent| {
        // Nothing cached may still point into a page being released.
        assert!(
            model.borrow().cached_targets(e.paddr, e.len).is_empty(),
            "released {e:?} while cached"
        );
        released.borrow_mut().push(e);
    };
    let expect_fgsp = matches!(kind, ModelKind::AmdV1) && full_sizes;

    for op in ops {
        match op {
            Op::Map { slot, offset_pages, pages, layout, seed } => {
                if slots.contains_key(slot) {
                    continue;
                }
                let iova = (slot + 1) * SLOT + offset_pages * PAGE_SIZE;
                let ext = host_extents(*layout, *pages, *seed, &mut next_host);
                tracker.map_dma(&mut mem, &mut inv, iova, &ext, Prot::READ | Prot::WRITE).unwrap();
                let mut va = iova;
                for e in &ext {
                    owned.insert(e.paddr, e.len);
                    for off in (0..e.len).step_by(PAGE_SIZE as usize) {
                        plain.insert(va + off, e.paddr + off);
                    }
                    va += e.len;
                }
                slots.insert(*slot, (iova, pages * PAGE_SIZE, ext));
            }
            Op::Unmap { slot } => {
                let Some((iova, size, ext)) = slots.remove(slot) else {
                    continue;
                };
                // Cutting a mapping is refused and changes nothing.
                if size > PAGE_SIZE {
                    let cut = tracker.unmap_dma(&mut mem, &mut inv, iova, PAGE_SIZE, &mut release);
                    assert_eq!(cut, Err(TrackerError::SplitsMapping));
                }
                let bytes =
                    tracker.unmap_dma(&mut mem, &mut inv, iova, size, &mut release).unwrap();
                assert_eq!(bytes, size);
                for va in (iova..iova + size).step_by(PAGE_SIZE as usize) {
                    plain.remove(&va);
                }
                for e in ext {
                    owned.remove(&e.paddr);
                }
                // Nothing of the range survives in any IOTLB, and DMA to it faults.
                let mut m = model.borrow_mut();
                for d in tracker.domains() {
                    assert_eq!(m.cached_iovas(d.id(), iova, size), 0, "stale IOTLB entries");
                    for va in (iova..iova + size).step_by(PAGE_SIZE as usize * 3) {
                        assert!(m.translate(&mem, d.id(), va, Prot::READ).is_err());
                    }
                }
            }
            Op::Attach => {
                if tracker.domains().len() >= 3 {
                    continue;
                }
                let d = Domain::new(&mut mem, next_id, 0, format.clone()).unwrap();
                let d = if full_sizes { d } else { d.with_page_sizes(1 << 12) };
                let before = mem.live_frames();
                let idx = tracker.attach(&mut mem, &mut inv, d).unwrap();
                let d = &tracker.domains()[idx];
                assert_eq!(d.fgsp(), expect_fgsp);
                if slots.is_empty() {
                    assert_eq!(mem.live_frames(), before, "probe left tables behind");
                }
                model.borrow_mut().set_context(next_id, d.root(), d.levels());
                next_id += 1;
            }
            Op::Detach { which } => {
                if *which >= tracker.domains().len() {
                    continue;
                }
                let d = tracker.detach(&mut mem, &mut inv, *which).unwrap();
                model.borrow_mut().clear_context(d.id());
                assert_eq!(model.borrow().cached_iovas(d.id(), 0, u64::MAX), 0);
                let before = mem.live_frames();
                d.destroy(&mut mem).unwrap();
                assert_eq!(mem.live_frames(), before - 1, "only the root was left");
            }
            Op::Teardown => {
                let domains = tracker.teardown(&mut mem, &mut inv, &mut release).unwrap();
                assert_eq!(mem.live_frames(), domains.len(), "teardown left tables behind");
                for d in domains {
                    assert_eq!(model.borrow().cached_iovas(d.id(), 0, u64::MAX), 0);
                    model.borrow_mut().clear_context(d.id());
                    d.destroy(&mut mem).unwrap();
                }
                assert_eq!(mem.live_frames(), 0);
                plain.clear();
                slots.clear();
                owned.clear();
            }
            Op::Dma { seed } => {
                // Every domain touches a sample of pages (mapped or not), filling the IOTLB.
                let ids: Vec<DomainId> = tracker.domains().iter().map(|d| d.id()).collect();
                for (i, &id) in ids.iter().enumerate() {
                    for (&va, _) in plain.iter().skip((*seed as usize + i) % 7).step_by(5) {
                        let _ = model.borrow_mut().translate(&mem, id, va, Prot::READ);
                    }
                }
            }
        }
        // Translations equal the plain map, through the IOTLB and through the tables.
        for d in tracker.domains() {
            let mut m = model.borrow_mut();
            for (&va, &pa) in plain.iter().step_by(3) {
                assert_eq!(m.translate(&mem, d.id(), va + 8, Prot::WRITE), Ok(pa + 8));
            }
            for &(iova, size, _) in slots.values() {
                for probe in [iova - PAGE_SIZE, iova + size] {
                    if !plain.contains_key(&probe) {
                        assert!(
                            m.translate(&mem, d.id(), probe, Prot::READ).is_err(),
                            "stale {probe:#x}"
                        );
                    }
                }
            }
        }
        // Released pages were ones we owned and no longer map.
        for e in released.borrow_mut().drain(..) {
            assert!(plain.values().all(|&pa| pa < e.paddr || pa >= e.paddr + e.len));
        }
        assert_eq!(mem.unflushed_words(), 0, "table writes not flushed for the device");
        assert!(mem.violations.is_empty(), "{:?}", mem.violations);
        assert_eq!(mem.bad_reads.get(), 0);
        let _ = &owned;
    }
    // Final teardown: everything freed.
    let domains = tracker.teardown(&mut mem, &mut inv, &mut release).unwrap();
    for d in domains {
        d.destroy(&mut mem).unwrap();
    }
    assert_eq!(mem.live_frames(), 0);
    assert_eq!(tracker.unreleased_bytes(), 0);
}

fn run_fmt(fmt: Fmt, full: bool, strategy: UnmapStrategy, ops: &[Op]) {
    match fmt {
        Fmt::Vtd3 => {
            run(VtdFormat::new(3, 3).unwrap(), ModelKind::Vtd { sllps: 3 }, full, strategy, ops)
        }
        Fmt::Vtd4 => {
            run(VtdFormat::new(4, 1).unwrap(), ModelKind::Vtd { sllps: 1 }, full, strategy, ops)
        }
        Fmt::Amd3 => run(AmdV1Format::new(3).unwrap(), ModelKind::AmdV1, full, strategy, ops),
        Fmt::Amd4 => run(AmdV1Format::new(4).unwrap(), ModelKind::AmdV1, full, strategy, ops),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn tracker_matches_plain_map(
        fmt in prop_oneof![Just(Fmt::Vtd3), Just(Fmt::Vtd4), Just(Fmt::Amd3), Just(Fmt::Amd4)],
        full in any::<bool>(),
        strategy in strategy(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run_fmt(fmt, full, strategy, &ops);
    }
}

#[test]
fn fgsp_probe_true_for_amd_false_for_vtd_and_avoids_iova_zero() {
    let model = RefCell::new(ModelIommu::new(ModelKind::AmdV1));
    let mut inv = SharedModel::new(&model);
    let mut mem = HostMemory::new();
    let mut t = DmaTracker::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    let ext = [HostExtent { paddr: HOST_BASE, len: 0x10_0000 }];
    t.map_dma(&mut mem, &mut inv, 0x10000, &ext, Prot::READ).unwrap();
    let d = Domain::new(&mut mem, 1, 0, AmdV1Format::new(4).unwrap()).unwrap();
    t.attach(&mut mem, &mut inv, d).unwrap();
    assert!(t.domains()[0].fgsp());
    // The probe's invalidation went to the hole after the mapping, not IOVA 0: the 8 KiB
    // NextLevel-7 page it mapped at 0x11_0000 (past page 0's reserve and the mapping).
    let want = crate::model::Invalidation::Block(1, IovaBlock { iova: 0x11_0000, order: 13 });
    assert_eq!(model.borrow().log, [want]);
    let v = VtdFormat::new(3, 3).unwrap();
    let mut tv = DmaTracker::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    let d = Domain::new(&mut mem, 2, 0, v).unwrap();
    tv.attach(&mut mem, &mut inv, d).unwrap();
    assert!(!tv.domains()[0].fgsp());
}

#[test]
fn gathered_teardown_issues_few_invalidations() {
    let model = RefCell::new(ModelIommu::new(ModelKind::Vtd { sllps: 0 }));
    let mut inv = SharedModel::new(&model);
    let mut mem = HostMemory::new();
    // The default's one flush is domain-wide (it retires the domain too); page by page
    // ends with one more, the domain-wide one destroy needs.
    for (strategy, max_inv) in [(UnmapStrategy::Gathered, 1), (UnmapStrategy::PageByPage, 513)] {
        let mut t = DmaTracker::new(strategy, 0x7F_0000_0000);
        let d = Domain::new(&mut mem, 1, 0, VtdFormat::new(3, 0).unwrap()).unwrap();
        t.attach(&mut mem, &mut inv, d).unwrap();
        let ext = [HostExtent { paddr: HOST_BASE, len: 0x20_0000 }];
        t.map_dma(&mut mem, &mut inv, 0x20_0000, &ext, Prot::READ).unwrap();
        let mut bytes = 0;
        let ds = t.teardown(&mut mem, &mut inv, &mut |e| bytes += e.len).unwrap();
        assert_eq!(bytes, 0x20_0000);
        assert_eq!(t.counters().invalidations, max_inv);
        for d in ds {
            d.destroy(&mut mem).unwrap();
        }
    }
    assert_eq!(mem.live_frames(), 0);
}

/// Records every block the tracker invalidates.
#[derive(Default)]
struct RecordingInvalidator {
    blocks: Vec<IovaBlock>,
}

impl IotlbInvalidator for RecordingInvalidator {
    fn max_block_order(&self) -> u32 {
        30
    }
    fn invalidate_block(&mut self, _d: DomainId, b: IovaBlock) -> Result<(), HwError> {
        self.blocks.push(b);
        Ok(())
    }
    fn invalidate_domain(&mut self, _d: DomainId) -> Result<(), HwError> {
        Ok(())
    }
    fn sync(&mut self) -> Result<(), HwError> {
        Ok(())
    }
}

#[test]
fn probe_uses_a_free_aligned_hole_not_iova_zero() {
    let mut mem = HostMemory::new();
    let mut inv = RecordingInvalidator::default();
    let mut t = DmaTracker::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    let ext = [HostExtent { paddr: HOST_BASE, len: 0x4000 }];
    t.map_dma(&mut mem, &mut inv, 0x10000, &ext, Prot::READ).unwrap();
    t.reserve_iova(0x14000, 0x20000);
    let frames = mem.live_frames();
    let d = Domain::new(&mut mem, 1, 0, AmdV1Format::new(3).unwrap()).unwrap();
    t.attach(&mut mem, &mut inv, d).unwrap();
    let probe = inv.blocks[0];
    assert_eq!(probe, IovaBlock { iova: 0x20000, order: 13 });
    // Only the root and the replayed mapping's tables remain.
    assert_eq!(mem.live_frames(), frames + 3);
}

/// Fails every sync until told otherwise.
struct FailingInvalidator {
    fail: bool,
    domain_wide: u64,
}

impl IotlbInvalidator for FailingInvalidator {
    fn max_block_order(&self) -> u32 {
        63
    }
    fn invalidate_block(&mut self, _d: DomainId, _b: IovaBlock) -> Result<(), HwError> {
        Ok(())
    }
    fn invalidate_domain(&mut self, _d: DomainId) -> Result<(), HwError> {
        self.domain_wide += 1;
        Ok(())
    }
    fn sync(&mut self) -> Result<(), HwError> {
        if self.fail {
            Err(HwError::Timeout { what: "test" })
        } else {
            Ok(())
        }
    }
}

#[test]
fn pages_of_a_failed_flush_wait_for_a_domain_wide_invalidation() {
    let mut mem = HostMemory::new();
    let mut inv = FailingInvalidator { fail: false, domain_wide: 0 };
    let mut t = DmaTracker::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    let d = Domain::new(&mut mem, 1, 0, VtdFormat::new(3, 3).unwrap()).unwrap();
    t.attach(&mut mem, &mut inv, d).unwrap();
    for i in 0..2u64 {
        let ext = [HostExtent { paddr: HOST_BASE + (i << 24), len: 0x4000 }];
        t.map_dma(&mut mem, &mut inv, 0x100_0000 * (i + 1), &ext, Prot::READ).unwrap();
    }
    let mut released = 0;
    inv.fail = true;
    let r = t.unmap_dma(&mut mem, &mut inv, 0x100_0000, 0x4000, &mut |e| released += e.len);
    assert!(matches!(r, Err(TrackerError::Hw(_))));
    assert_eq!(released, 0);
    inv.fail = false;
    // A later, successful flush of another range must not release the held-back pages.
    t.unmap_dma(&mut mem, &mut inv, 0x200_0000, 0x4000, &mut |e| released += e.len).unwrap();
    assert_eq!(released, 0x4000);
    assert_eq!(t.unreleased_bytes(), 0x4000);
    t.retry_release(&mut mem, &mut inv, &mut |e| released += e.len).unwrap();
    assert_eq!(inv.domain_wide, 1);
    assert_eq!(released, 0x8000);
    assert_eq!(t.unreleased_bytes(), 0);
}

#[test]
fn fgsp_probe_stays_inside_the_units_address_width() {
    let model = RefCell::new(ModelIommu::new(ModelKind::Vtd { sllps: 0 }));
    let mut inv = SharedModel::new(&model);
    let mut mem = HostMemory::new();
    let mut t = DmaTracker::new(UnmapStrategy::Gathered, 0x7F_0000_0000);
    // A 64 KiB aperture is all reserved (page 0 region): no hole may be found beyond it,
    // so the probe does not run (fgsp false) and nothing is mapped or invalidated.
    let narrow = VtdFormat::new(4, 0).unwrap().with_address_width(16);
    let d = Domain::new(&mut mem, 1, 0, narrow).unwrap();
    let i = t.attach(&mut mem, &mut inv, d).unwrap();
    assert!(!t.domains()[i].fgsp());
    assert!(model.borrow().log.is_empty(), "no probe, no invalidation");
    let wide = VtdFormat::new(4, 0).unwrap().with_address_width(17);
    let d = Domain::new(&mut mem, 2, 0, wide).unwrap();
    t.attach(&mut mem, &mut inv, d).unwrap();
}

#[test]
fn linux_2018_issues_a_command_per_region_and_waits_once_per_512() {
    let model = RefCell::new(ModelIommu::new(ModelKind::Vtd { sllps: 0 }));
    let mut inv = SharedModel::new(&model);
    let mut mem = HostMemory::new();
    let mut t = DmaTracker::new(UnmapStrategy::Linux2018, 0x7F_0000_0000);
    let d = Domain::new(&mut mem, 1, 0, VtdFormat::new(3, 0).unwrap()).unwrap();
    t.attach(&mut mem, &mut inv, d).unwrap();
    // 1100 pages, none physically adjacent: 1100 regions.
    let ext: Vec<HostExtent> =
        (0..1100).map(|i| HostExtent { paddr: HOST_BASE + i * 0x2000, len: 0x1000 }).collect();
    t.map_dma(&mut mem, &mut inv, 0x4000_0000, &ext, Prot::READ).unwrap();
    t.reset_counters();
    let mut bytes = 0;
    let ds = t.teardown(&mut mem, &mut inv, &mut |e| bytes += e.len).unwrap();
    assert_eq!(bytes, 1100 * 0x1000);
    // And the domain-wide invalidation that retires the domain, with its own wait.
    assert_eq!(t.counters().invalidations, 1100 + 1);
    assert_eq!(t.counters().syncs, 3 + 1, "1100 regions in waits of up to 512");
    for d in ds {
        d.destroy(&mut mem).unwrap();
    }
    assert_eq!(mem.live_frames(), 0);
}
