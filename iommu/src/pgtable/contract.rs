//! The contract every page-table format passes, the IOMMU ones (VT-d, AMD v1) and the
//! CPU's nested ones (NPT, EPT) alike: an empty word decodes as empty; at every level a
//! table entry decodes back to its table; every page size the format offers, at every
//! level that holds it, encodes and decodes back to the same page and access; and the
//! engine maps, translates and unmaps a page of every size in that format.

use super::amdv1::AmdV1Format;
use super::nested::{EptFormat, NestedLeaf, NptFormat};
use super::vtd::VtdFormat;
use super::*;
use crate::model::HostMemory;
use crate::platform::FrameAllocator;

/// The physical page base used for every encoding: high bits set, aligned to 1 GiB.
const HOST: u64 = 0x7_4000_0000;

fn accesses() -> [Prot; 2] {
    [Prot::READ, Prot::READ | Prot::WRITE]
}

/// The level that holds a page of `2^order` bytes: the lowest whose entry covers it.
fn level_of(order: u32) -> u32 {
    (order - 12) / 9 + 1
}

fn contract<F: PteFormat>(name: &str, f: F) {
    for level in 1..=f.levels() {
        assert_eq!(f.decode(0, level), Pte::Empty, "{name}: empty at level {level}");
        if level > 1 {
            let raw = f.table_entry(HOST + 0x5000, level);
            assert_eq!(
                f.decode(raw, level),
                Pte::Table(HOST + 0x5000),
                "{name}: table, level {level}"
            );
        }
    }
    let sizes = f.page_sizes();
    assert!(sizes & (1 << 12) != 0, "{name}: no 4 KiB pages");
    let mut seen = 0;
    for order in 12..64 {
        if sizes & (1u64 << order) == 0 {
            continue;
        }
        seen += 1;
        let level = level_of(order);
        assert!(level <= f.levels(), "{name}: 2^{order} beyond the top level");
        let paddr = HOST & !((1u64 << order) - 1);
        for prot in accesses() {
            let raw = f.leaf_entry(paddr, level, order, prot);
            assert_eq!(
                f.decode(raw, level),
                Pte::Leaf { paddr, order, prot },
                "{name}: leaf of 2^{order} at level {level}, {prot:?}"
            );
        }
        // Through the engine: map one page of this size, translate inside it, unmap it.
        let mut mem = HostMemory::strict();
        let mut t = PageTable::new(&mut mem, f.clone()).unwrap();
        let iova = 1u64 << order;
        t.map(&mut mem, iova, paddr, 1 << order, Prot::READ | Prot::WRITE).unwrap();
        let size = 1u64 << order;
        for off in [0, (size / 2) & !0xFFF, size - 0x1000] {
            assert_eq!(t.iova_to_phys(&mem, iova + off), Some(paddr + off), "{name}: 2^{order}");
        }
        let mut freed = alloc::vec::Vec::new();
        let gone = t.unmap(&mut mem, iova, 1 << order, &mut freed).unwrap();
        assert_eq!(gone.size, 1 << order, "{name}: unmap 2^{order}");
        assert_eq!(t.iova_to_phys(&mem, iova), None);
        for frame in freed {
            mem.free_frame(frame);
        }
        t.destroy(&mut mem);
    }
    assert!(seen >= 1);
}

#[test]
fn every_format_passes_the_contract() {
    for levels in [3, 4] {
        contract("VT-d", VtdFormat::new(levels, 3).unwrap());
        contract("VT-d 4K", VtdFormat::new(levels, 0).unwrap());
    }
    for levels in 3..=6 {
        contract("AMD v1", AmdV1Format::new(levels).unwrap());
    }
    for large in [false, true] {
        contract("NPT", NptFormat::new(large));
        contract("EPT", EptFormat::new(large));
    }
}

fn device_leaves<F: NestedLeaf>(name: &str, f: F) {
    for level in 1..=3 {
        let order = level_shift(level);
        let paddr = HOST & !((1u64 << order) - 1);
        let raw = f.device_leaf(paddr, level, Prot::READ | Prot::WRITE);
        assert!(f.is_uncached(raw), "{name}: device leaf at level {level}");
        assert!(!f.is_uncached(f.leaf_entry(paddr, level, order, Prot::READ)));
        assert_eq!(
            f.decode(raw, level),
            Pte::Leaf { paddr, order, prot: Prot::READ | Prot::WRITE },
            "{name}: device leaf decodes as the page"
        );
    }
}

#[test]
fn nested_formats_mark_device_leaves_uncached() {
    device_leaves("NPT", NptFormat::new(true));
    device_leaves("EPT", EptFormat::new(true));
}
