//! VT-d second-level page-table entries (legacy-mode translation).
//!
//! Bit 0 R, bit 1 W, bit 7 PS (a 2 MiB leaf at level 2, 1 GiB at level 3, when the unit's
//! CAP.SLLPS allows it), bits 51:12 address; every other bit is written as zero.

use super::{Prot, Pte, PteFormat, PADDR_MASK};
use crate::platform::PhysAddr;

/// Read permission.
pub const VTD_R: u64 = 1 << 0;
/// Write permission.
pub const VTD_W: u64 = 1 << 1;
/// Page size: the entry is a leaf above level 1.
pub const VTD_PS: u64 = 1 << 7;

/// The VT-d second-level format for one unit: its depth, superpage support and usable
/// IOVA width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtdFormat {
    levels: u32,
    sllps: u8,
    address_bits: u32,
}

impl VtdFormat {
    /// A format of `levels` (3 = 39-bit, 4 = 48-bit) and the unit's CAP.SLLPS bits
    /// (bit 0: 2 MiB pages, bit 1: 1 GiB pages); the whole depth's width is usable.
    /// `None` for an unsupported depth.
    pub fn new(levels: u32, sllps: u32) -> Option<Self> {
        matches!(levels, 3 | 4).then_some(Self {
            levels,
            sllps: (sllps & 3) as u8,
            address_bits: super::level_shift(levels) + 9,
        })
    }

    /// Caps the usable IOVA width at `bits` (the unit's CAP.MGAW: IOVAs at or above
    /// 2^MGAW fault even when the table depth could name them).
    pub fn with_address_width(mut self, bits: u32) -> Self {
        self.address_bits = self.address_bits.min(bits.max(12));
        self
    }
}

impl PteFormat for VtdFormat {
    fn levels(&self) -> u32 {
        self.levels
    }

    fn address_bits(&self) -> u32 {
        self.address_bits
    }

    fn page_sizes(&self) -> u64 {
        let mut sizes = 1 << 12;
        if self.sllps & 1 != 0 {
            sizes |= 1 << 21;
        }
        if self.sllps & 2 != 0 {
            sizes |= 1 << 30;
        }
        sizes
    }

    fn decode(&self, raw: u64, level: u32) -> Pte {
        if raw & (VTD_R | VTD_W) == 0 {
            return Pte::Empty;
        }
        let addr = raw & PADDR_MASK;
        if level == 1 || raw & VTD_PS != 0 {
            let mut prot = Prot::empty();
            prot.set(Prot::READ, raw & VTD_R != 0);
            prot.set(Prot::WRITE, raw & VTD_W != 0);
            let order = super::level_shift(level);
            Pte::Leaf { paddr: addr & !((1u64 << order) - 1), order, prot }
        } else {
            Pte::Table(addr)
        }
    }

    fn table_entry(&self, next: PhysAddr, _level: u32) -> u64 {
        (next & PADDR_MASK) | VTD_R | VTD_W
    }

    fn leaf_entry(&self, paddr: PhysAddr, level: u32, _order: u32, prot: Prot) -> u64 {
        let mut pte = paddr & PADDR_MASK;
        if prot.contains(Prot::READ) {
            pte |= VTD_R;
        }
        if prot.contains(Prot::WRITE) {
            pte |= VTD_W;
        }
        if level > 1 {
            pte |= VTD_PS;
        }
        pte
    }
}
