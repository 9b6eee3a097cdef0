//! AMD-Vi v1 page-table entries, including NextLevel-7 power-of-two pages.
//!
//! Bit 0 PR, bits 11:9 NextLevel, 51:12 address, 60 FC, 61 IR, 62 IW. A leaf with
//! NextLevel 0 is the level's natural size (4K, 2M, 1G); NextLevel 7 is a page of
//! `2^order` bytes (8K..256G) whose size is the run of one bits from address bit 12
//! (8K: bit 12 clear; 16K: bit 12 set, bit 13 clear; ...), replicated in every entry it
//! covers. A table entry's NextLevel is always `level - 1`, never >= its own level.

use super::{size_range, Prot, Pte, PteFormat, PADDR_MASK};
use crate::platform::PhysAddr;

/// Present.
pub const AMD_PR: u64 = 1 << 0;
/// Force coherent (set on leaves, as Linux does).
pub const AMD_FC: u64 = 1 << 60;
/// Read permission.
pub const AMD_IR: u64 = 1 << 61;
/// Write permission.
pub const AMD_IW: u64 = 1 << 62;
/// Shift of the NextLevel field.
pub const AMD_NEXT_LEVEL_SHIFT: u32 = 9;
/// NextLevel value that marks a power-of-two page.
pub const AMD_NEXT_LEVEL_SIZED: u64 = 7;

/// Largest page order v1 allows (256 GiB; 512 GiB is not a valid page).
pub const AMD_MAX_ORDER: u32 = 38;

/// The AMD-Vi v1 format at one paging mode (the DTE Mode field = number of levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmdV1Format {
    levels: u32,
}

impl AmdV1Format {
    /// A format of `levels` (DTE Mode 3..=6). `None` for other modes.
    pub fn new(levels: u32) -> Option<Self> {
        (3..=6).contains(&levels).then_some(Self { levels })
    }
}

/// The order of a NextLevel-7 page from its address field (bits 51:12).
pub fn sized_page_order(raw: u64) -> u32 {
    let ones = ((raw & PADDR_MASK) >> 12).trailing_ones();
    12 + ones + 1
}

/// The NextLevel field of an entry.
pub fn next_level(raw: u64) -> u64 {
    (raw >> AMD_NEXT_LEVEL_SHIFT) & 7
}

fn prot_of(raw: u64) -> Prot {
    let mut prot = Prot::empty();
    prot.set(Prot::READ, raw & AMD_IR != 0);
    prot.set(Prot::WRITE, raw & AMD_IW != 0);
    prot
}

impl PteFormat for AmdV1Format {
    fn levels(&self) -> u32 {
        self.levels
    }

    fn page_sizes(&self) -> u64 {
        let top = super::level_shift(self.levels) + 8;
        size_range(12, top.min(AMD_MAX_ORDER))
    }

    fn decode(&self, raw: u64, level: u32) -> Pte {
        if raw & AMD_PR == 0 {
            return Pte::Empty;
        }
        let shift = super::level_shift(level);
        match next_level(raw) {
            0 => Pte::Leaf { paddr: raw & PADDR_MASK, order: shift, prot: prot_of(raw) },
            AMD_NEXT_LEVEL_SIZED => {
                let order = sized_page_order(raw).clamp(shift + 1, shift + 8);
                Pte::Leaf {
                    paddr: raw & PADDR_MASK & !((1u64 << order) - 1),
                    order,
                    prot: prot_of(raw),
                }
            }
            _ => Pte::Table(raw & PADDR_MASK),
        }
    }

    fn table_entry(&self, next: PhysAddr, level: u32) -> u64 {
        (next & PADDR_MASK)
            | (u64::from(level - 1) << AMD_NEXT_LEVEL_SHIFT)
            | AMD_PR
            | AMD_IR
            | AMD_IW
    }

    fn leaf_entry(&self, paddr: PhysAddr, level: u32, order: u32, prot: Prot) -> u64 {
        let mut pte = AMD_PR | AMD_FC;
        if prot.contains(Prot::READ) {
            pte |= AMD_IR;
        }
        if prot.contains(Prot::WRITE) {
            pte |= AMD_IW;
        }
        if order == super::level_shift(level) {
            pte | (paddr & PADDR_MASK)
        } else {
            // Ones in bits order-2..12, zero at bit order-1: the size marker.
            let size = 1u64 << order;
            let addr = (paddr | (size - 1)) & !(size >> 1) & PADDR_MASK;
            pte | addr | (AMD_NEXT_LEVEL_SIZED << AMD_NEXT_LEVEL_SHIFT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_pages_round_trip() {
        let f = AmdV1Format::new(4).unwrap();
        for order in 13..=AMD_MAX_ORDER {
            let level = (order - 12) / 9 + 1;
            if order == crate::pgtable::level_shift(level) {
                continue;
            }
            let paddr = 0x40_0000_0000u64 & !((1u64 << order) - 1);
            let raw = f.leaf_entry(paddr, level, order, Prot::READ);
            assert_eq!(next_level(raw), 7, "order {order}");
            assert_eq!(sized_page_order(raw), order);
            assert_eq!(f.decode(raw, level), Pte::Leaf { paddr, order, prot: Prot::READ });
        }
    }

    #[test]
    fn eight_k_page_has_bit_12_clear() {
        let f = AmdV1Format::new(3).unwrap();
        let raw = f.leaf_entry(0x2000, 1, 13, Prot::READ | Prot::WRITE);
        assert_eq!(raw & (1 << 12), 0);
        assert_eq!(raw & PADDR_MASK, 0x2000);
        let raw = f.leaf_entry(0x4000, 1, 14, Prot::READ);
        assert_eq!(raw & PADDR_MASK, 0x5000);
    }
}
