//! Property tests aimed at what the teardown shortcuts risk: mappings that share leaf
//! tables and start unaligned, several units with different page sizes and depths,
//! injected failures (invalidation waits and table allocations) at every step, the set of
//! released pages checked against the set owned (no double, foreign or missing release),
//! and a reference model whose page-walk cache walks a table freed too early.

use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::test_layouts::{host_extents, layout, strategy, Layout};
use super::*;
use crate::invalidate::DomainId;
use crate::model::{HostMemory, ModelIommu, ModelKind, SharedModel};
use crate::pgtable::amdv1::AmdV1Format;
use crate::pgtable::vtd::VtdFormat;

/// The model units, each shared with the checks, whose `sync` can be told to fail once.
struct Units<'a>(Vec<SharedModel<'a>>);

impl InvalidatorSet for Units<'_> {
    fn unit(&mut self, unit: usize) -> &mut dyn IotlbInvalidator {
        &mut self.0[unit]
    }
}

const UNITS: usize = 3;
const WINDOW: u64 = 1 << 30; // IOVA window base: mappings live in [1 GiB, 1 GiB + 32 MiB)
const WINDOW_PAGES: u64 = 8192;
const HOST_BASE: u64 = 0x80_0000_0000;

#[derive(Debug, Clone)]
enum Op {
    Map { start: u64, pages: u64, layout: Layout, seed: u64 },
    Unmap { pick: usize },
    Attach { unit: usize },
    Detach { which: usize },
    Teardown,
    Retry,
    Dma { seed: u64 },
    FailSync { unit: usize, after: u32 },
    FailAlloc { after: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let layout = layout();
    // Starts: any page (unaligned), or 2 MiB-aligned (superpages, shared upper tables).
    let start = prop_oneof![0..WINDOW_PAGES, (0..16u64).prop_map(|i| i * 512)];
    prop_oneof![
        5 => (start, 1..1100u64, layout, any::<u64>())
            .prop_map(|(start, pages, layout, seed)| Op::Map { start, pages, layout, seed }),
        3 => any::<usize>().prop_map(|pick| Op::Unmap { pick }),
        2 => (0..UNITS).prop_map(|unit| Op::Attach { unit }),
        1 => (0..4usize).prop_map(|which| Op::Detach { which }),
        1 => Just(Op::Teardown),
        1 => Just(Op::Retry),
        3 => any::<u64>().prop_map(|seed| Op::Dma { seed }),
        1 => (0..UNITS, 0..6u32).prop_map(|(unit, after)| Op::FailSync { unit, after }),
        1 => (0..6u32).prop_map(|after| Op::FailAlloc { after }),
    ]
}

/// What differs between the formats: a domain for unit `u` and the unit's model.
trait Machine {
    type F: PteFormat;
    fn unit_model(&self, u: usize) -> ModelIommu;
    fn domain(&self, mem: &mut HostMemory, id: DomainId, u: usize) -> Option<Domain<Self::F>>;
}

/// VT-d units: 3-level 4K-only, 4-level 2M, 4-level 2M+1G (different MAMV too).
struct Vtd;
impl Machine for Vtd {
    type F = VtdFormat;
    fn unit_model(&self, u: usize) -> ModelIommu {
        let sllps = [0, 1, 3][u];
        let mut m = ModelIommu::new(ModelKind::Vtd { sllps });
        m.max_order = [12 + 9, 12 + 18, 12 + 6][u];
        m
    }
    fn domain(&self, mem: &mut HostMemory, id: DomainId, u: usize) -> Option<Domain<VtdFormat>> {
        let fmt = VtdFormat::new([3, 4, 4][u], [0, 1, 3][u])?;
        Domain::new(mem, id, u, fmt).ok()
    }
}

/// AMD-Vi units: 4K only (3 levels), 4K+2M (4 levels), every size (4 levels).
struct Amd;
impl Machine for Amd {
    type F = AmdV1Format;
    fn unit_model(&self, _u: usize) -> ModelIommu {
        ModelIommu::new(ModelKind::AmdV1)
    }
    fn domain(&self, mem: &mut HostMemory, id: DomainId, u: usize) -> Option<Domain<AmdV1Format>> {
        let fmt = AmdV1Format::new([3, 4, 4][u])?;
        let d = Domain::new(mem, id, u, fmt).ok()?;
        Some(match u {
            0 => d.with_page_sizes(1 << 12),
            1 => d.with_page_sizes((1 << 12) | (1 << 21)),
            _ => d,
        })
    }
}

/// The 4 KiB pages of `extents`.
fn pages_of(extents: &[HostExtent]) -> impl Iterator<Item = u64> + '_ {
    extents.iter().flat_map(|e| (e.paddr..e.paddr + e.len).step_by(PAGE_SIZE as usize))
}

fn run<X: Machine>(machine: X, strategy: UnmapStrategy, ops: &[Op]) {
    let models: Vec<RefCell<ModelIommu>> =
        (0..UNITS).map(|u| RefCell::new(machine.unit_model(u))).collect();
    let fails: Vec<Cell<Option<u32>>> = (0..UNITS).map(|_| Cell::new(None)).collect();
    let mut inv = Units(
        models
            .iter()
            .zip(&fails)
            .map(|(model, fail_in)| SharedModel { model, fail_sync_in: Some(fail_in) })
            .collect(),
    );
    let mut mem = HostMemory::strict();
    let mut tracker = DmaTracker::<X::F>::new(strategy, 0x7F_0000_0000);
    // What the tracker should hold: IOVA -> (size, extents); IOVA page -> host page.
    let mut records: BTreeMap<u64, (u64, Vec<HostExtent>)> = BTreeMap::new();
    let mut plain: BTreeMap<u64, u64> = BTreeMap::new();
    // Host pages the tracker is responsible for (mapped, or held after an unmap).
    let mut owned: BTreeSet<u64> = BTreeSet::new();
    let mut next_host = HOST_BASE;
    let mut next_id: DomainId = 1;
    // After a failure: stale IOTLB entries may legitimately remain until a retry.
    let mut tainted = false;
    // Domains whose detach failed: attached, their tables cleared, a retry owed.
    let mut half_detached: BTreeSet<DomainId> = BTreeSet::new();
    // Domains a failed attach handed back whose retiring invalidation failed too: kept
    // (destroy would refuse) until the failures are off.
    let mut unretired = Vec::new();
    let released = RefCell::new(Vec::<HostExtent>::new());
    let mut release = |e: HostExtent| {
        for m in &models {
            let m = m.borrow();
            assert!(m.cached_targets(e.paddr, e.len).is_empty(), "released {e:?} while cached");
        }
        released.borrow_mut().push(e);
    };

    for op in ops {
        match *op {
            Op::Map { start, pages, layout, seed } => {
                let iova = WINDOW + start * PAGE_SIZE;
                let size = pages * PAGE_SIZE;
                let overlaps =
                    records.range(..iova + size).next_back().is_some_and(|(&s, r)| s + r.0 > iova);
                let ext = host_extents(layout, pages, seed, &mut next_host);
                let r = tracker.map_dma(&mut mem, &mut inv, iova, &ext, Prot::READ | Prot::WRITE);
                match r {
                    Ok(()) => {
                        assert!(!overlaps, "overlapping map accepted");
                        let mut va = iova;
                        for pa in pages_of(&ext) {
                            plain.insert(va, pa);
                            owned.insert(pa);
                            va += PAGE_SIZE;
                        }
                        records.insert(iova, (size, ext));
                    }
                    Err(TrackerError::Overlap) => assert!(overlaps),
                    Err(TrackerError::Hw(_)) => {
                        // The caller's pages are quarantined: the tracker owes them back.
                        owned.extend(pages_of(&ext));
                        tainted = true;
                    }
                    Err(TrackerError::Uncovered) if tainted => owned.extend(pages_of(&ext)),
                    Err(TrackerError::Map(_)) => {
                        // Back with the caller: nothing may reach them any more.
                        for m in &models {
                            let m = m.borrow();
                            for e in &ext {
                                assert!(m.cached_targets(e.paddr, e.len).is_empty());
                            }
                        }
                    }
                    Err(e) => panic!("map_dma: {e:?}"),
                }
                if r.is_err() {
                    for d in tracker.domains() {
                        for va in (iova..iova + size).step_by(PAGE_SIZE as usize * 7) {
                            if !plain.contains_key(&va) {
                                assert_eq!(d.iova_to_phys(&mem, va), None, "rollback left {va:#x}");
                            }
                        }
                    }
                }
            }
            Op::Unmap { pick } => {
                if records.is_empty() {
                    continue;
                }
                let (&iova, &(size, _)) = records.iter().nth(pick % records.len()).unwrap();
                if size > PAGE_SIZE {
                    let cut = tracker.unmap_dma(
                        &mut mem,
                        &mut inv,
                        iova + PAGE_SIZE,
                        size - PAGE_SIZE,
                        &mut release,
                    );
                    assert_eq!(cut, Err(TrackerError::SplitsMapping));
                }
                match tracker.unmap_dma(&mut mem, &mut inv, iova, size, &mut release) {
                    Ok(bytes) => assert_eq!(bytes, size),
                    Err(TrackerError::Hw(_)) => tainted = true,
                    Err(TrackerError::Uncovered) if tainted => {}
                    Err(e) => panic!("unmap_dma: {e:?}"),
                }
                records.remove(&iova);
                for va in (iova..iova + size).step_by(PAGE_SIZE as usize) {
                    plain.remove(&va);
                    for d in tracker.domains() {
                        assert_eq!(d.iova_to_phys(&mem, va), None, "unmap left {va:#x}");
                    }
                }
            }
            Op::Attach { unit } => {
                if tracker.domains().len() >= 4 {
                    continue;
                }
                let Some(d) = machine.domain(&mut mem, next_id, unit) else { continue };
                next_id += 1;
                match tracker.attach(&mut mem, &mut inv, d) {
                    Ok(i) => {
                        let d = &tracker.domains()[i];
                        models[unit].borrow_mut().set_context(d.id(), d.root(), d.levels());
                    }
                    Err((d, e)) => {
                        assert!(matches!(e, TrackerError::Hw(_) | TrackerError::Map(_)), "{e:?}");
                        tainted |= matches!(e, TrackerError::Hw(_));
                        // Never programmed into a unit, but destroy still wants the proof.
                        let mut d = d;
                        match d.retire(&mut mem, inv.unit(d.unit())) {
                            Ok(()) => d.destroy(&mut mem).unwrap(),
                            Err(_) => unretired.push(d),
                        }
                    }
                }
            }
            Op::Detach { which } => {
                if which >= tracker.domains().len() {
                    continue;
                }
                match tracker.detach(&mut mem, &mut inv, which) {
                    Ok(d) => {
                        half_detached.remove(&d.id());
                        let mut m = models[d.unit()].borrow_mut();
                        if !tainted {
                            assert_eq!(
                                m.cached_iovas(d.id(), 0, u64::MAX),
                                0,
                                "stale after detach"
                            );
                        }
                        m.clear_context(d.id());
                        drop(m);
                        d.destroy(&mut mem).unwrap();
                    }
                    Err(TrackerError::Hw(_)) => {
                        tainted = true;
                        half_detached.insert(tracker.domains()[which].id());
                    }
                    Err(e) => panic!("detach: {e:?}"),
                }
            }
            Op::Teardown => {
                match tracker.teardown(&mut mem, &mut inv, &mut release) {
                    Ok(domains) => {
                        half_detached.clear();
                        for d in domains {
                            models[d.unit()].borrow_mut().clear_context(d.id());
                            d.destroy(&mut mem).unwrap();
                        }
                    }
                    Err(TrackerError::Hw(_)) => tainted = true,
                    Err(TrackerError::Uncovered) if tainted => {}
                    Err(e) => panic!("teardown: {e:?}"),
                }
                records.clear();
                plain.clear();
            }
            Op::Retry => {
                if tracker.retry_release(&mut mem, &mut inv, &mut release).is_ok() {
                    tainted = false;
                }
            }
            Op::Dma { seed } => {
                for d in tracker.domains() {
                    let mut m = models[d.unit()].borrow_mut();
                    for (&va, _) in plain.iter().skip(seed as usize % 5).step_by(3) {
                        let _ = m.translate(&mem, d.id(), va, Prot::READ);
                        let _ = m.translate(&mem, d.id(), va ^ 0x1000, Prot::READ);
                    }
                }
            }
            Op::FailSync { unit, after } => fails[unit].set(Some(after)),
            Op::FailAlloc { after } => mem.fail_alloc_in = Some(after),
        }
        // Released pages: each one owned, and released once (no foreign, no double).
        for e in released.borrow_mut().drain(..) {
            for pa in pages_of(&[e]) {
                assert!(owned.remove(&pa), "released {pa:#x}: foreign or released twice");
                assert!(!plain.values().any(|&p| p == pa), "released {pa:#x} while mapped");
            }
        }
        // No unit's page-walk cache points at a freed table.
        for m in &models {
            for t in m.borrow().cached_tables() {
                assert!(mem.is_live(t), "page-walk cache holds freed table {t:#x}");
            }
        }
        if !tainted {
            for d in tracker.domains().iter().filter(|d| !half_detached.contains(&d.id())) {
                let mut m = models[d.unit()].borrow_mut();
                for (&va, &pa) in plain.iter().step_by(5) {
                    assert_eq!(m.translate(&mem, d.id(), va + 8, Prot::WRITE), Ok(pa + 8));
                }
            }
        }
        assert_eq!(mem.bad_reads.get(), 0, "a walk read a freed table");
        assert!(mem.violations.is_empty(), "{:?}", mem.violations);
        assert_eq!(mem.unflushed_words(), 0, "table writes not flushed for the device");
    }
    // Failures off; teardown and retry until everything is back.
    for f in &fails {
        f.set(None);
    }
    mem.fail_alloc_in = None;
    let domains = match tracker.teardown(&mut mem, &mut inv, &mut release) {
        Ok(d) => d,
        Err(_) => {
            tracker.retry_release(&mut mem, &mut inv, &mut release).unwrap();
            tracker.teardown(&mut mem, &mut inv, &mut release).unwrap()
        }
    };
    tracker.retry_release(&mut mem, &mut inv, &mut release).unwrap();
    for mut d in unretired {
        d.retire(&mut mem, inv.unit(d.unit())).unwrap();
        d.destroy(&mut mem).unwrap();
    }
    for d in domains {
        models[d.unit()].borrow_mut().clear_context(d.id());
        d.destroy(&mut mem).unwrap();
    }
    for e in released.borrow_mut().drain(..) {
        for pa in pages_of(&[e]) {
            assert!(owned.remove(&pa), "released {pa:#x}: foreign or released twice");
        }
    }
    assert!(owned.is_empty(), "never released: {} pages", owned.len());
    assert_eq!(tracker.unreleased_bytes(), 0);
    assert_eq!(mem.live_frames(), 0, "table pages leaked");
    assert!(mem.violations.is_empty(), "{:?}", mem.violations);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn vtd_units_release_exactly_what_they_own_after_covering_invalidations(
        strategy in strategy(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(Vtd, strategy, &ops);
    }

    #[test]
    fn amd_units_release_exactly_what_they_own_after_covering_invalidations(
        strategy in strategy(),
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run(Amd, strategy, &ops);
    }
}

/// Found by the property: a `map_dma` that runs out of table pages on its second leaf
/// table mapped only part of its range; the rollback invalidates all of it, so the
/// caller's pages come back at once instead of waiting in quarantine.
#[test]
fn map_out_of_tables_half_way_gives_the_pages_back_after_one_flush() {
    run(
        Amd,
        UnmapStrategy::PageByPage,
        &[
            Op::Attach { unit: 0 },
            Op::Map { start: 0, pages: 1, layout: Layout::Contiguous, seed: 0 },
            Op::Attach { unit: 0 },
            Op::FailAlloc { after: 0 },
            Op::Map { start: 1, pages: 513, layout: Layout::Fragmented, seed: 0 },
        ],
    );
}
