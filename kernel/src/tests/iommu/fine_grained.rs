//! Translation through AMD-Vi fine-grained pages (NextLevel-7 entries of 8K, 64K, 1M and
//! 4M), proven by data that lands in the LAST 4K of each page. On AMD-Vi the table is
//! walked first to show it really holds one replicated NextLevel-7 page of that size (so
//! the test cannot pass by mapping 4K pages); on VT-d the same mapping is built from the
//! level's natural pages and only the data check applies.

use super::translation::LandsThrough;
use super::{on_edu_unit, IommuTest, Rig};
use crate::ensure;
use crate::iommu::Units;
use crate::mem::KernelMemory;
use crate::testing::{TestContext, TestResult};
use alloc::format;
use iommu::domain::Domain;
use iommu::pgtable::amdv1::{next_level, sized_page_order, AMD_NEXT_LEVEL_SIZED};
use iommu::pgtable::{level_index, level_shift, Pte, PteFormat};
use iommu::platform::{PhysAddr, PhysMemory};
use iommu::unit::RemappingUnit;

/// The leaf entry translating `iova`: its level, raw value, and the table it sits in.
pub(crate) struct RawLeaf {
    /// Level of the table holding it (1 = the 4K table).
    pub level: u32,
    /// The entry as stored.
    pub raw: u64,
    /// The table page holding it.
    pub table: PhysAddr,
    /// log2 of the page size the format decodes from it.
    pub order: u32,
}

/// Walks `dom`'s tables in memory (not through the engine's own lookup) to the leaf
/// translating `iova`.
pub(crate) fn leaf_of<F: PteFormat>(dom: &Domain<F>, iova: u64) -> Option<RawLeaf> {
    let format = dom.table().format();
    let mut table = dom.root();
    let mut level = dom.levels();
    loop {
        let raw = KernelMemory.read_u64(table + 8 * level_index(iova, level) as u64);
        match format.decode(raw, level) {
            Pte::Empty => return None,
            Pte::Leaf { order, .. } => return Some(RawLeaf { level, raw, table, order }),
            Pte::Table(next) if level > 1 => {
                table = next;
                level -= 1;
            }
            Pte::Table(_) => return None,
        }
    }
}

/// Checks that `iova..iova + size` is one NextLevel-7 page: the right level, NextLevel 7,
/// the size marker in the address field, and the same entry replicated in every slot the
/// page covers.
fn holds_one_sized_page<F: PteFormat>(dom: &Domain<F>, iova: u64, size: u64) -> TestResult {
    let order = size.trailing_zeros();
    let leaf = leaf_of(dom, iova).ok_or_else(|| format!("no leaf translates {iova:#x}"))?;
    // 8K..1M pages live in the 4K table, 4M..512M in the 2M table.
    let level = if order <= 20 { 1 } else { 2 };
    ensure!(leaf.level == level, "the {size:#x} page sits at level {}, not {level}", leaf.level);
    ensure!(
        next_level(leaf.raw) == AMD_NEXT_LEVEL_SIZED,
        "entry {:#x} has NextLevel {}, not 7",
        leaf.raw,
        next_level(leaf.raw)
    );
    ensure!(
        sized_page_order(leaf.raw) == order && leaf.order == order,
        "entry {:#x} encodes a page of order {}, not {order}",
        leaf.raw,
        sized_page_order(leaf.raw)
    );
    let copies = size >> level_shift(level);
    let first = level_index(iova, level) as u64;
    for i in 0..copies {
        let raw = KernelMemory.read_u64(leaf.table + 8 * (first + i));
        ensure!(raw == leaf.raw, "copy {i} of {copies} is {raw:#x}, not {:#x}", leaf.raw);
    }
    // The slots just outside the page must not be part of it.
    for i in [first.wrapping_sub(1), first + copies] {
        if i < 512 {
            let raw = KernelMemory.read_u64(leaf.table + 8 * i);
            ensure!(raw != leaf.raw, "slot {i} outside the page repeats its entry");
        }
    }
    log::info!(
        "fine-grained {size:#x} page at {iova:#x}: level {level}, {copies} copies of {:#x}",
        leaf.raw
    );
    Ok(())
}

/// A fine-grained page, written in its last 4K.
struct FineGrainedPage {
    size: u64,
    iova: u64,
    amd: bool,
}

impl IommuTest for FineGrainedPage {
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult {
        let (size, iova, amd) = (self.size, self.iova, self.amd);
        let lands = LandsThrough { size, iova, offset: size - 1024 };
        lands.run_checking_tables(rig, |dom| {
            if amd {
                holds_one_sized_page(dom, iova, size)
            } else {
                let leaf = leaf_of(dom, iova + size - 1024)
                    .ok_or_else(|| format!("no leaf translates the end of {iova:#x}"))?;
                log::info!("{size:#x} at {iova:#x}: {}-byte leaves", 1u64 << leaf.order);
                Ok(())
            }
        })
    }
}

fn fine_grained(ctx: &mut TestContext<'_>, size: u64, iova: u64) -> TestResult {
    let amd = matches!(ctx.platform.iommu.units, Units::Amd(_));
    on_edu_unit(ctx, 0, &FineGrainedPage { size, iova, amd })
}

/// An 8 KiB page (two copies at level 1).
pub fn eight_k(ctx: &mut TestContext<'_>) -> TestResult {
    fine_grained(ctx, 8 << 10, 0x2_0000_6000)
}

/// A 64 KiB page (16 copies at level 1).
pub fn sixty_four_k(ctx: &mut TestContext<'_>) -> TestResult {
    fine_grained(ctx, 64 << 10, 0x2_0013_0000)
}

/// A 1 MiB page (256 copies at level 1, the largest level-1 page).
pub fn one_m(ctx: &mut TestContext<'_>) -> TestResult {
    fine_grained(ctx, 1 << 20, 0x2_0070_0000)
}

/// A 4 MiB page (two copies at level 2).
pub fn four_m(ctx: &mut TestContext<'_>) -> TestResult {
    fine_grained(ctx, 4 << 20, 0x2_0C40_0000)
}
