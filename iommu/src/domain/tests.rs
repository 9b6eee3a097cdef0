//! The domain API: reserved windows, gathered blocks, deferred tables, destroy only when retired.

use super::*;

#[test]
fn no_domain_maps_the_interrupt_window_or_the_hypertransport_range() {
    use crate::model::HostMemory;
    use crate::pgtable::amdv1::AmdV1Format;
    let mut mem = HostMemory::new();
    let fmt = AmdV1Format::new(4).unwrap();
    let mut d = Domain::new(&mut mem, 3, 0, fmt).unwrap();
    for (iova, size, window) in [
        (0xFEE0_0000, 0x1000, 0xFEE0_0000),
        (0xFEC0_0000, 0x40_0000, 0xFEE0_0000), // a 4 MiB run ending inside it
        (0xFEFF_F000, 0x1000, 0xFEE0_0000),
        (0xFD_0000_0000, 0x20_0000, 0xFD_0000_0000),
        (0xFC_FFFF_F000, 0x2000, 0xFD_0000_0000),
    ] {
        let got = d.map(&mut mem, iova, 0x1000_0000, size, Prot::READ);
        assert_eq!(got, Err(MapError::Reserved { window }), "{iova:#x}+{size:#x}");
        // The tracker's one-walk path is refused the same way.
        let mut pieces = [(0x1000_0000, size)].into_iter();
        let got = d.map_pieces(&mut mem, iova, size, &mut pieces, Prot::READ);
        assert_eq!(got, Err(MapError::Reserved { window }), "pieces {iova:#x}+{size:#x}");
    }
    // Right below and right above the window are ordinary IOVAs.
    d.map(&mut mem, 0xFEDF_F000, 0x1000_0000, 0x1000, Prot::READ).unwrap();
    d.map(&mut mem, 0xFF00_0000, 0x1000_0000, 0x1000, Prot::READ).unwrap();
}

#[test]
fn blocks_are_aligned_and_cover_exactly() {
    let mut g = IotlbGather::new();
    g.add_range(0x3000, 0x11000);
    g.add_range(0x11000, 0x12000);
    g.add_range(0x1_0000_0000, 0x1_0020_0000);
    let blocks = g.blocks(16);
    let want = [(0x3000, 12), (0x4000, 14), (0x8000, 15), (0x10000, 13), (0x1_0000_0000, 16)];
    for (i, &(iova, order)) in want.iter().enumerate() {
        assert_eq!(blocks[i], IovaBlock { iova, order });
    }
    // 2 MiB in 64 KiB blocks.
    assert_eq!(blocks.len(), 4 + 32);
    let mut covered = 0;
    for b in &blocks {
        assert_eq!(b.iova % b.size(), 0);
        assert!(b.order <= 16);
        covered += b.size();
    }
    assert_eq!(covered, 0xF000 + 0x20_0000);
}

#[test]
fn many_blocks_become_one_domain_invalidation_and_tables_wait_for_sync() {
    use crate::model::{HostMemory, ModelIommu, ModelKind};
    use crate::pgtable::vtd::VtdFormat;
    let mut mem = HostMemory::new();
    let mut inv = ModelIommu::new(ModelKind::Vtd { sllps: 0 });
    let fmt = VtdFormat::new(3, 0).unwrap();
    let mut d = Domain::new(&mut mem, 7, 0, fmt).unwrap();
    let mut g = IotlbGather::new();
    for i in 0..(DOMAIN_FLUSH_THRESHOLD as u64 + 1) {
        d.map(&mut mem, i << 22, 0x1000_0000, 0x1000, Prot::READ).unwrap();
    }
    for i in 0..(DOMAIN_FLUSH_THRESHOLD as u64 + 1) {
        d.unmap(&mut mem, i << 22, 0x1000, &mut g).unwrap();
    }
    let live = mem.live_frames();
    assert!(live > 1, "emptied tables are not freed before the flush");
    let stats = d.flush(&mut mem, &mut g, &mut inv).unwrap();
    assert_eq!(stats, FlushStats { blocks: 0, domain_wide: 1 });
    assert_eq!(inv.syncs, 1);
    assert_eq!(mem.live_frames(), 1);
    assert!(g.is_empty());
}

#[test]
fn tables_of_a_failed_map_are_freed_by_the_next_flush_after_its_invalidation() {
    use crate::model::{HostMemory, ModelIommu, ModelKind};
    use crate::pgtable::vtd::VtdFormat;
    let mut mem = HostMemory::new();
    let mut inv = ModelIommu::new(ModelKind::Vtd { sllps: 1 });
    let mut d = Domain::new(&mut mem, 3, 0, VtdFormat::new(3, 1).unwrap()).unwrap();
    d.map(&mut mem, 0x60_0000, 0x1000_0000, 0x1000, Prot::READ).unwrap();
    let live = mem.live_frames();
    assert!(d.map(&mut mem, 0x20_1000, 0x1000_1000, 0x40_0000, Prot::READ).is_err());
    assert_eq!(mem.live_frames(), live + 1);
    let stats = d.flush(&mut mem, &mut IotlbGather::new(), &mut inv).unwrap();
    assert!(stats.total() > 0, "the failed map's span is invalidated");
    assert_eq!(inv.syncs, 1);
    assert_eq!(mem.live_frames(), live);
}

#[test]
fn deferred_gather_is_invalidated_and_freed_by_the_next_flush() {
    use crate::model::{HostMemory, Invalidation, ModelIommu, ModelKind};
    use crate::pgtable::vtd::VtdFormat;
    let mut mem = HostMemory::new();
    let mut inv = ModelIommu::new(ModelKind::Vtd { sllps: 0 });
    let mut d = Domain::new(&mut mem, 5, 0, VtdFormat::new(3, 0).unwrap()).unwrap();
    d.map(&mut mem, 0x4000_0000, 0x1000_0000, 0x1000, Prot::READ).unwrap();
    let mut g = IotlbGather::new();
    d.unmap(&mut mem, 0x4000_0000, 0x1000, &mut g).unwrap();
    inv.fail_sync = true;
    assert!(d.flush(&mut mem, &mut g, &mut inv).is_err());
    d.defer(g);
    let live = mem.live_frames();
    assert!(live > 1, "tables wait for a completed invalidation");
    inv.fail_sync = false;
    inv.log.clear();
    d.flush(&mut mem, &mut IotlbGather::new(), &mut inv).unwrap();
    assert_eq!(inv.log, [Invalidation::Block(5, IovaBlock { iova: 0x4000_0000, order: 12 })]);
    assert_eq!(mem.live_frames(), 1);
}

#[test]
fn destroy_frees_nothing_without_a_domain_wide_invalidation_after_the_last_change() {
    use crate::model::{HostMemory, ModelIommu, ModelKind};
    use crate::pgtable::vtd::VtdFormat;
    let mut mem = HostMemory::new();
    let mut inv = ModelIommu::new(ModelKind::Vtd { sllps: 1 });
    let mut d = Domain::new(&mut mem, 3, 0, VtdFormat::new(3, 1).unwrap()).unwrap();
    d.map(&mut mem, 0x60_0000, 0x1000_0000, 0x1000, Prot::READ).unwrap();
    let live = mem.live_frames();
    // Never invalidated.
    let NotRetired(mut d) = d.destroy(&mut mem).unwrap_err();
    assert_eq!(mem.live_frames(), live);
    // A range flush covering every mapping is still not the whole domain.
    let mut gather = IotlbGather::new();
    d.unmap(&mut mem, 0x60_0000, 0x1000, &mut gather).unwrap();
    d.flush(&mut mem, &mut gather, &mut inv).unwrap();
    let NotRetired(d) = d.destroy(&mut mem).unwrap_err();
    // A domain-wide invalidation of another domain proves nothing for this one.
    Completed::domain_wide(&mut inv, 0, 4).unwrap();
    let NotRetired(mut d) = d.destroy(&mut mem).unwrap_err();
    // Retired, then changed again: the proof is older than the change.
    d.retire(&mut mem, &mut inv).unwrap();
    assert!(d.is_retired());
    d.map(&mut mem, 0x60_0000, 0x1000_0000, 0x1000, Prot::READ).unwrap();
    assert!(!d.is_retired());
    let NotRetired(mut d) = d.destroy(&mut mem).unwrap_err();
    let before = inv.syncs;
    d.retire(&mut mem, &mut inv).unwrap();
    assert_eq!(inv.syncs, before + 1, "retire waits for its invalidation");
    d.destroy(&mut mem).unwrap();
    assert_eq!(mem.live_frames(), 0, "every table went with the retired domain");
}
