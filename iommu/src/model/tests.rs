//! The model walker against hand-built entries (independent of the engine's encoders).

use super::*;
use crate::invalidate::{IotlbInvalidator, IovaBlock};
use crate::pgtable::Prot;
use crate::platform::{FrameAllocator, PhysMemory};

fn table(mem: &mut HostMemory) -> u64 {
    mem.alloc_zeroed_frame().unwrap()
}

#[test]
fn amd_level_skip_and_sized_pages_decode_by_the_spec() {
    let mut mem = HostMemory::new();
    let m = ModelIommu::new(ModelKind::AmdV1);
    let (root, l1) = (table(&mut mem), table(&mut mem));
    // Level 3 entry 0 skips level 2: NextLevel 1, PR, IR, IW.
    mem.write_u64(root, l1 | (1 << 9) | 1 | (3 << 61));
    // Level 1 entry 4..8: a 16K page at 0x5000_0000 (bit 12 set, bit 13 clear), NL 7.
    for i in 4..8 {
        mem.write_u64(l1 + 8 * i, 0x5000_1000 | (7 << 9) | 1 | (1 << 61));
    }
    assert_eq!(m.walk(&mem, root, 3, 0x6000), Ok((0x5000_2000, Prot::READ)));
    // IOVA bits of the skipped level must be zero.
    assert_eq!(m.walk(&mem, root, 3, 0x20_4000), Err(Fault::NotPresent));
    // An 8K marker at level 2 (too small for the level) is malformed.
    let l2 = table(&mut mem);
    mem.write_u64(root + 8, l2 | (2 << 9) | 1 | (3 << 61));
    mem.write_u64(l2, 0x4000_0000 | (7 << 9) | 1 | (3 << 61));
    assert_eq!(m.walk(&mem, root, 3, 1 << 30), Err(Fault::Reserved));
    // NextLevel >= the entry's level is refused, never followed.
    mem.write_u64(root + 16, l2 | (3 << 9) | 1 | (3 << 61));
    assert_eq!(m.walk(&mem, root, 3, 2 << 30), Err(Fault::Reserved));
}

#[test]
fn vtd_reserved_bits_and_superpage_support_are_checked() {
    let mut mem = HostMemory::new();
    let only_2m = ModelIommu::new(ModelKind::Vtd { sllps: 1 });
    let (root, l2) = (table(&mut mem), table(&mut mem));
    mem.write_u64(root, l2 | 3);
    mem.write_u64(l2, 0x4000_0000 | 3 | (1 << 7)); // 2M leaf
    assert_eq!(only_2m.walk(&mem, root, 3, 0x1_2000), Ok((0x4001_2000, Prot::READ | Prot::WRITE)));
    mem.write_u64(root + 8, 0x8000_0000 | 1 | (1 << 7)); // 1G leaf without SLLPS bit 1
    assert_eq!(only_2m.walk(&mem, root, 3, 1 << 30), Err(Fault::Reserved));
    mem.write_u64(l2 + 8, 0x4020_0000 | 3 | (1 << 7) | (1 << 11)); // SNP set
    assert_eq!(only_2m.walk(&mem, root, 3, 0x20_0000), Err(Fault::Reserved));
    mem.write_u64(l2 + 16, 0x4041_0000 | 3 | (1 << 7)); // misaligned 2M address
    assert_eq!(only_2m.walk(&mem, root, 3, 0x40_0000), Err(Fault::Reserved));
}

#[test]
fn iotlb_stays_stale_until_a_covering_invalidation_completes() {
    let mut mem = HostMemory::new();
    let mut m = ModelIommu::new(ModelKind::Vtd { sllps: 0 });
    let (root, l2, l1) = (table(&mut mem), table(&mut mem), table(&mut mem));
    mem.write_u64(root, l2 | 3);
    mem.write_u64(l2, l1 | 3);
    mem.write_u64(l1 + 8 * 5, 0x9000_0000 | 1);
    m.set_context(3, root, 3);
    assert_eq!(m.translate(&mem, 3, 0x5008, Prot::READ), Ok(0x9000_0008));
    mem.write_u64(l1 + 8 * 5, 0);
    assert_eq!(m.translate(&mem, 3, 0x5008, Prot::READ), Ok(0x9000_0008), "stale");
    m.invalidate_block(4, IovaBlock { iova: 0x4000, order: 14 }).unwrap(); // wrong domain
    m.invalidate_block(3, IovaBlock { iova: 0x4000, order: 14 }).unwrap();
    assert_eq!(m.translate(&mem, 3, 0x5008, Prot::READ), Ok(0x9000_0008), "not yet synced");
    m.sync().unwrap();
    assert_eq!(m.translate(&mem, 3, 0x5008, Prot::READ), Err(Fault::NotPresent));
}

#[test]
fn page_walk_cache_walks_a_table_freed_before_its_invalidation_completed() {
    let mut mem = HostMemory::new();
    let mut m = ModelIommu::new(ModelKind::Vtd { sllps: 0 });
    let (root, l2, l1) = (table(&mut mem), table(&mut mem), table(&mut mem));
    mem.write_u64(root, l2 | 3);
    mem.write_u64(l2, l1 | 3);
    mem.write_u64(l1 + 8 * 5, 0x9000_0000 | 3);
    mem.write_u64(l1 + 8 * 6, 0x9100_0000 | 3);
    m.set_context(3, root, 3);
    assert_eq!(m.translate(&mem, 3, 0x5000, Prot::READ), Ok(0x9000_0000));
    assert!(m.cached_tables().contains(&l1));
    // Unlink and free the leaf table without an invalidation: the cached pointer remains,
    // and a walk for another page in its span goes through the freed frame.
    mem.write_u64(l2, 0);
    mem.free_frame(l1);
    assert!(!mem.is_live(l1));
    assert!(m.cached_tables().contains(&l1), "the check the property tests make sees it");
    assert_eq!(m.translate(&mem, 3, 0x6000, Prot::READ), Err(Fault::BadTable));
    assert!(mem.bad_reads.get() > 0);
    // A completed invalidation that meets the table's span drops it.
    m.invalidate_block(3, IovaBlock { iova: 0x6000, order: 12 }).unwrap();
    assert!(m.cached_tables().contains(&l1), "not before the sync");
    m.sync().unwrap();
    assert!(!m.cached_tables().contains(&l1));
    assert_eq!(m.translate(&mem, 3, 0x6000, Prot::READ), Err(Fault::NotPresent));
}

#[test]
fn runs_agree_with_word_access_and_stray_runs_are_reported() {
    let mut mem = HostMemory::new();
    mem.reserve_frames(2);
    let (a, b) = (table(&mut mem), table(&mut mem));
    assert_eq!(b, a + 4096, "reserved frames come out in address order");
    mem.write_run(a + 8 * 10, 0x1003, 0x1000, 5);
    for i in 0..5 {
        assert_eq!(mem.read_u64(a + 8 * (10 + i)), 0x1003 + 0x1000 * i);
    }
    assert_eq!(mem.first_nonzero(a, 512), Some(10));
    assert_eq!(mem.first_nonzero(a + 8 * 15, 497), None);
    assert_eq!(mem.first_nonzero(b, 512), None);
    assert_eq!(mem.writes, 5);
    // A run that leaves its frame falls back to words: the part outside a live frame is
    // a violation, never a write into the neighbour.
    mem.free_frame(b);
    mem.write_run(a + 8 * 510, 7, 0, 4);
    assert_eq!(mem.read_u64(a + 8 * 511), 7);
    assert_eq!(mem.violations.len(), 2, "{:?}", mem.violations);
    let before = mem.bad_reads.get();
    assert_eq!(mem.first_nonzero(a + 8 * 511, 2), Some(0));
    assert_eq!(mem.first_nonzero(b, 2), Some(0), "a freed frame reads as all ones");
    assert_eq!(mem.bad_reads.get(), before + 1);
}
