//! Engine tests against the reference walker.

use super::amdv1::AmdV1Format;
use super::vtd::VtdFormat;
use super::*;
use crate::model::{Fault, HostMemory, ModelIommu, ModelKind};
use alloc::vec::Vec;

const HOST: u64 = 0x40_0000_0000;

fn vtd(levels: u32) -> (PageTable<VtdFormat>, HostMemory, ModelIommu) {
    let mut mem = HostMemory::strict();
    let t = PageTable::new(&mut mem, VtdFormat::new(levels, 3).unwrap()).unwrap();
    (t, mem, ModelIommu::new(ModelKind::Vtd { sllps: 3 }))
}

fn amd(levels: u32) -> (PageTable<AmdV1Format>, HostMemory, ModelIommu) {
    let mut mem = HostMemory::strict();
    let t = PageTable::new(&mut mem, AmdV1Format::new(levels).unwrap()).unwrap();
    (t, mem, ModelIommu::new(ModelKind::AmdV1))
}

fn check_walk<F: PteFormat>(
    t: &PageTable<F>,
    mem: &HostMemory,
    m: &ModelIommu,
    iova: u64,
    size: u64,
    paddr: u64,
) {
    let mut off = 0;
    while off < size {
        assert_eq!(t.iova_to_phys(mem, iova + off), Some(paddr + off));
        assert_eq!(m.walk(mem, t.root(), t.levels(), iova + off).map(|x| x.0), Ok(paddr + off));
        off += 0x1000 * 7;
    }
}

#[test]
fn vtd_uses_2m_pages_and_unmap_returns_whole_page() {
    let (mut t, mut mem, m) = vtd(4);
    t.map(&mut mem, 0x20_0000, HOST, 0x40_0000, Prot::READ | Prot::WRITE).unwrap();
    check_walk(&t, &mem, &m, 0x20_0000, 0x40_0000, HOST);
    // Root, L3, L2: two 2 MiB leaves, no L1 table.
    assert_eq!(mem.live_frames(), 3);
    let mut freed = Vec::new();
    let done = t.unmap(&mut mem, 0x21_0000, 0x1000, &mut freed).unwrap();
    assert_eq!(done, Unmapped { iova: 0x20_0000, size: 0x20_0000 });
    assert_eq!(t.iova_to_phys(&mem, 0x20_0000), None);
    assert_eq!(t.iova_to_phys(&mem, 0x40_0000), Some(HOST + 0x20_0000));
    assert!(mem.violations.is_empty());
}

#[test]
fn vtd_4k_only_when_restricted_and_tables_freed_when_empty() {
    let (mut t, mut mem, m) = vtd(3);
    t.restrict_page_sizes(1 << 12);
    t.map(&mut mem, 0x40_0000, HOST, 0x40_0000, Prot::READ).unwrap();
    check_walk(&t, &mem, &m, 0x40_0000, 0x40_0000, HOST);
    assert_eq!(mem.live_frames(), 1 + 1 + 2);
    let mut freed = Vec::new();
    let done = t.unmap(&mut mem, 0x40_0000, 0x1000, &mut freed).unwrap();
    assert_eq!(done, Unmapped { iova: 0x40_0000, size: 0x1000 });
    assert!(freed.is_empty());
    t.unmap(&mut mem, 0x40_1000, 0x3F_F000, &mut freed).unwrap();
    assert_eq!(freed.len(), 3, "two leaf tables and the L2 table");
    assert_eq!(m.walk(&mem, t.root(), 3, 0x40_0000), Err(Fault::NotPresent));
}

#[test]
fn amd_sized_pages_replicate_and_unmap_whole_run() {
    let (mut t, mut mem, m) = amd(4);
    // 0x1_0000 aligned, 16 pages: one 64K NextLevel-7 page (16 copies).
    t.map(&mut mem, 0x1_0000, HOST + 0x1_0000, 0x1_0000, Prot::READ).unwrap();
    check_walk(&t, &mem, &m, 0x1_0000, 0x1_0000, HOST + 0x1_0000);
    let mut freed = Vec::new();
    let done = t.unmap(&mut mem, 0x1_8000, 0x1000, &mut freed).unwrap();
    assert_eq!(done, Unmapped { iova: 0x1_0000, size: 0x1_0000 });
    assert_eq!(freed.len(), 3);
    assert_eq!(m.walk(&mem, t.root(), 4, 0x1_0000), Err(Fault::NotPresent));
}

#[test]
fn amd_large_sized_pages_at_levels_2_and_3() {
    let (mut t, mut mem, m) = amd(4);
    let iova = 1u64 << 33; // 8G aligned
    t.map(&mut mem, iova, HOST, 1 << 33, Prot::WRITE).unwrap(); // one 8G page at level 3
    check_walk(&t, &mem, &m, iova, 1 << 22, HOST);
    assert_eq!(
        m.walk(&mem, t.root(), 4, iova + (1 << 33) - 0x1000).map(|x| x.0),
        Ok(HOST + (1 << 33) - 0x1000)
    );
    t.map(&mut mem, 1 << 22, HOST + (1 << 22), 1 << 22, Prot::READ).unwrap(); // 4M at level 2
    check_walk(&t, &mem, &m, 1 << 22, 1 << 22, HOST + (1 << 22));
    assert_eq!(
        t.map(&mut mem, iova + (1 << 30), HOST, 0x1000, Prot::READ),
        Err(MapError::AlreadyMapped { iova: iova + (1 << 30) })
    );
}

#[test]
fn leaf_runs_coalesce_contiguous_leaves() {
    let (mut t, mut mem, _) = vtd(4);
    t.map(&mut mem, 0x1000, HOST + 0x1000, 0x40_0000, Prot::READ).unwrap();
    t.map(&mut mem, 0x80_0000, HOST + 0x900_0000, 0x2000, Prot::READ).unwrap();
    let mut runs = Vec::new();
    t.for_each_run(&mem, 0, 0x100_0000, |r| runs.push((r.iova, r.paddr, r.size)));
    assert_eq!(runs, [(0x1000, HOST + 0x1000, 0x40_0000), (0x80_0000, HOST + 0x900_0000, 0x2000)]);
}

#[test]
fn every_write_is_flushed_for_the_device() {
    let (mut t, mut mem, _) = amd(3);
    t.map(&mut mem, 0x3000, HOST + 0x3000, 0x7_D000, Prot::READ).unwrap();
    for a in 0..mem.live_frames() as u64 * 512 {
        assert!(!mem.is_unflushed(crate::model::ARENA_BASE + 8 * a));
    }
    let mut freed = Vec::new();
    t.unmap(&mut mem, 0x3000, 0x7_D000, &mut freed).unwrap();
    for a in 0..512u64 {
        assert!(!mem.is_unflushed(t.root() + 8 * a));
    }
}

#[test]
fn bad_ranges_are_refused() {
    let (mut t, mut mem, _) = vtd(3);
    assert_eq!(t.map(&mut mem, 0x800, HOST, 0x1000, Prot::READ), Err(MapError::BadRange));
    assert_eq!(t.map(&mut mem, 1 << 39, HOST, 0x1000, Prot::READ), Err(MapError::BadRange));
    assert_eq!(t.map(&mut mem, 0, HOST, 0x1000, Prot::empty()), Err(MapError::NoAccess));
    t.map(&mut mem, 0x1000, HOST, 0x2000, Prot::READ).unwrap();
    assert_eq!(
        t.map(&mut mem, 0, HOST, 0x3000, Prot::READ),
        Err(MapError::AlreadyMapped { iova: 0x1000 })
    );
    // The failed map left nothing mapped at 0.
    assert_eq!(t.iova_to_phys(&mem, 0), None);
}

#[test]
fn page_by_page_unmap_reads_few_entries() {
    let (mut t, mut mem, _) = vtd(4);
    t.restrict_page_sizes(1 << 12);
    t.map(&mut mem, 1 << 36, HOST, 1 << 22, Prot::READ).unwrap();
    let mut freed = Vec::new();
    let before = t.walk_steps();
    for i in 0..1024u64 {
        t.unmap(&mut mem, (1 << 36) + i * 4096, 4096, &mut freed).unwrap();
    }
    let per_page = (t.walk_steps() - before) / 1024;
    assert!(per_page <= 10, "{per_page} entries read per 4K unmap");
}

#[test]
fn failed_map_leaves_no_empty_table_in_the_way_of_a_superpage() {
    let (mut t, mut mem, m) = vtd(3);
    t.map(&mut mem, 0x60_0000, HOST, 0x1000, Prot::READ).unwrap();
    let live = mem.live_frames();
    // Runs into the 4 KiB page at 0x60_0000 after filling a new leaf table with 4K pages.
    let err = t.map(&mut mem, 0x20_1000, HOST + 0x20_1000, 0x40_0000, Prot::READ);
    assert_eq!(err, Err(MapError::AlreadyMapped { iova: 0x60_0000 }));
    assert_eq!(t.iova_to_phys(&mem, 0x20_1000), None);
    // The emptied leaf table is unlinked but not freed before an invalidation.
    assert_eq!(mem.live_frames(), live + 1);
    t.map(&mut mem, 0x20_0000, HOST, 0x20_0000, Prot::READ).unwrap();
    check_walk(&t, &mem, &m, 0x20_0000, 0x20_0000, HOST);
    let mut freed = Vec::new();
    let span = t.take_rolled_back(&mut freed);
    assert_eq!(freed.len(), 1);
    assert_eq!(span, Unmapped { iova: 0x20_1000, size: 0x40_0000 });
    assert!(mem.violations.is_empty());
}

#[test]
fn failed_map_unlinks_tables_it_made_without_mapping_into_them() {
    let (mut t, mut mem, _) = vtd(4);
    t.restrict_page_sizes(1 << 12);
    t.map(&mut mem, 0x4000_0000, HOST, 0x1000, Prot::READ).unwrap();
    let live = mem.live_frames();
    // Starts 2 MiB below the existing page: new L2/L1 tables, then the conflict.
    let err = t.map(&mut mem, 0x3FE0_0000, HOST, 0x20_1000, Prot::READ);
    assert_eq!(err, Err(MapError::AlreadyMapped { iova: 0x4000_0000 }));
    let mut freed = Vec::new();
    t.take_rolled_back(&mut freed);
    // Every table the failed map made is unlinked (none stays in the tree).
    assert_eq!(mem.live_frames(), live + freed.len());
    assert_eq!(freed.len(), 2);
    let mut all = Vec::new();
    t.unmap(&mut mem, 0x4000_0000, 0x1000, &mut all).unwrap();
    assert_eq!(all.len(), 3, "only the original path's tables were still linked");
}

#[test]
fn map_pieces_keeps_its_place_and_refuses_bad_pieces_leaving_nothing() {
    let (mut t, mut mem, m) = vtd(4);
    // 1000 single pages, none adjacent, across a leaf-table boundary, one walk.
    let pieces: Vec<(u64, u64)> = (0..1000).map(|i| (0x4000_0000 + i * 0x2000, 0x1000)).collect();
    let iova = 0x20_0000 - 0x1000 * 10;
    t.map_pieces(&mut mem, iova, 1000 * 0x1000, &mut pieces.iter().copied(), Prot::READ).unwrap();
    for (i, &(pa, _)) in pieces.iter().enumerate() {
        let va = iova + i as u64 * 0x1000;
        assert_eq!(m.walk(&mem, t.root(), 4, va).map(|w| w.0), Ok(pa), "{va:#x}");
    }
    let frames = mem.live_frames();
    // A misaligned piece half way, pieces short of the size, pieces beyond it: refused,
    // and nothing of the attempt stays mapped.
    let base = 0x1_0000_0000;
    let bad = [(0x5000_0000, 0x1000), (0x5000_0800, 0x1000)];
    let short = [(0x5000_0000, 0x1000)];
    let long = [(0x5000_0000, 0x3000)];
    for case in [&bad[..], &short[..], &long[..]] {
        let r = t.map_pieces(&mut mem, base, 0x2000, &mut case.iter().copied(), Prot::READ);
        assert_eq!(r, Err(MapError::BadRange), "{case:?}");
        assert_eq!(t.iova_to_phys(&mem, base), None, "{case:?}");
        let mut freed = Vec::new();
        let _ = t.take_rolled_back(&mut freed);
        for f in freed {
            mem.free_frame(f);
        }
        assert_eq!(mem.live_frames(), frames, "{case:?}: tables of the attempt freed");
    }
}
