//! The CPU's nested page-table formats (guest-physical -> host-physical), beside the
//! IOMMU ones: AMD NPT (the long-mode 4-level format, walked as user accesses) and Intel
//! EPT (SDM vol. 3C, 29.3.2). Both are 4 levels of 512 entries with 2 MiB and 1 GiB leaves
//! at levels 2 and 3; they differ in how an entry says present, writable, executable and
//! cached. Guest RAM is write-back; a device window (a passed-through BAR) is uncached,
//! which [`NestedLeaf::device_leaf`] encodes (the engine's [`PteFormat::leaf_entry`] is
//! always write-back memory).

use super::{Prot, Pte, PteFormat, PADDR_MASK};
use crate::bits::Field;
use crate::platform::PhysAddr;

/// What the nested formats add to [`PteFormat`]: the uncached leaf of a device window.
pub trait NestedLeaf: PteFormat {
    /// A leaf like [`PteFormat::leaf_entry`] but uncached (device registers).
    fn device_leaf(&self, paddr: PhysAddr, level: u32, prot: Prot) -> u64;
    /// Whether a leaf this format wrote is uncached.
    fn is_uncached(&self, raw: u64) -> bool;
}

/// NPT: present.
pub const NPT_P: u64 = 1 << 0;
/// NPT: writable.
pub const NPT_RW: u64 = 1 << 1;
/// NPT: user (nested walks are user accesses: set at every level).
pub const NPT_US: u64 = 1 << 2;
/// NPT: page-level write-through.
pub const NPT_PWT: u64 = 1 << 3;
/// NPT: page-level cache disable.
pub const NPT_PCD: u64 = 1 << 4;
/// NPT: a leaf above level 1.
pub const NPT_PS: u64 = 1 << 7;

/// EPT: read access.
pub const EPT_R: u64 = 1 << 0;
/// EPT: write access.
pub const EPT_W: u64 = 1 << 1;
/// EPT: instruction fetch (supervisor-mode execute without mode-based control).
pub const EPT_X: u64 = 1 << 2;
/// EPT leaf: the memory type (0 UC, 6 WB), used as is with [`EPT_IGNORE_PAT`].
pub const EPT_MEMORY_TYPE: Field = Field::new(3, 3);
/// EPT leaf: ignore the guest's PAT.
pub const EPT_IGNORE_PAT: u64 = 1 << 6;
/// EPT: a leaf above level 1.
pub const EPT_LARGE: u64 = 1 << 7;
/// Memory type uncacheable.
pub const MEMORY_UC: u64 = 0;
/// Memory type write-back.
pub const MEMORY_WB: u64 = 6;

/// The EPT pointer (VMCS field EPTP) for a 4-level table at `root`: write-back paging
/// structures (bits 2:0 = 6), walk length 4 (bits 5:3 = 3), no accessed/dirty flags.
pub fn ept_pointer(root: PhysAddr) -> u64 {
    (root & PADDR_MASK) | MEMORY_WB | (3 << 3)
}

fn sizes(large_1g: bool) -> u64 {
    (1 << 12) | (1 << 21) | if large_1g { 1 << 30 } else { 0 }
}

fn leaf_order(level: u32) -> u32 {
    super::level_shift(level)
}

/// AMD NPT: 4 levels, 4K and 2M leaves, 1G when the CPU has 1 GiB pages (CPUID
/// 0x8000_0001 EDX bit 26).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NptFormat {
    large_1g: bool,
}

impl NptFormat {
    /// The format, with 1 GiB leaves when `large_1g`.
    pub fn new(large_1g: bool) -> Self {
        NptFormat { large_1g }
    }
}

impl PteFormat for NptFormat {
    fn levels(&self) -> u32 {
        4
    }

    fn page_sizes(&self) -> u64 {
        sizes(self.large_1g)
    }

    fn decode(&self, raw: u64, level: u32) -> Pte {
        if raw & NPT_P == 0 {
            return Pte::Empty;
        }
        if level == 1 || raw & NPT_PS != 0 {
            let order = leaf_order(level);
            let mut prot = Prot::READ;
            prot.set(Prot::WRITE, raw & NPT_RW != 0);
            Pte::Leaf { paddr: raw & PADDR_MASK & !((1u64 << order) - 1), order, prot }
        } else {
            Pte::Table(raw & PADDR_MASK)
        }
    }

    fn table_entry(&self, next: PhysAddr, _level: u32) -> u64 {
        (next & PADDR_MASK) | NPT_P | NPT_RW | NPT_US
    }

    fn leaf_entry(&self, paddr: PhysAddr, level: u32, _order: u32, prot: Prot) -> u64 {
        // NPT cannot express write-only: any access makes the page present.
        let mut pte = (paddr & PADDR_MASK) | NPT_P | NPT_US;
        if prot.contains(Prot::WRITE) {
            pte |= NPT_RW;
        }
        if level > 1 {
            pte |= NPT_PS;
        }
        pte
    }
}

impl NestedLeaf for NptFormat {
    fn device_leaf(&self, paddr: PhysAddr, level: u32, prot: Prot) -> u64 {
        self.leaf_entry(paddr, level, leaf_order(level), prot) | NPT_PCD | NPT_PWT
    }

    fn is_uncached(&self, raw: u64) -> bool {
        raw & NPT_PCD != 0
    }
}

/// Intel EPT: 4 levels, 4K and 2M leaves, 1G when IA32_VMX_EPT_VPID_CAP bit 17 says so.
/// Every present leaf is executable (the guest runs its code from its RAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptFormat {
    large_1g: bool,
}

impl EptFormat {
    /// The format, with 1 GiB leaves when `large_1g`.
    pub fn new(large_1g: bool) -> Self {
        EptFormat { large_1g }
    }

    fn leaf(paddr: PhysAddr, level: u32, prot: Prot, memory_type: u64) -> u64 {
        let mut pte = (paddr & PADDR_MASK) | EPT_IGNORE_PAT;
        pte = EPT_MEMORY_TYPE.set(pte, memory_type);
        if prot.contains(Prot::READ) {
            pte |= EPT_R | EPT_X;
        }
        if prot.contains(Prot::WRITE) {
            // Write without read is a misconfiguration in EPT: writable implies readable.
            pte |= EPT_W | EPT_R | EPT_X;
        }
        if level > 1 {
            pte |= EPT_LARGE;
        }
        pte
    }
}

impl PteFormat for EptFormat {
    fn levels(&self) -> u32 {
        4
    }

    fn page_sizes(&self) -> u64 {
        sizes(self.large_1g)
    }

    fn decode(&self, raw: u64, level: u32) -> Pte {
        if raw & (EPT_R | EPT_W | EPT_X) == 0 {
            return Pte::Empty;
        }
        if level == 1 || raw & EPT_LARGE != 0 {
            let order = leaf_order(level);
            let mut prot = Prot::empty();
            prot.set(Prot::READ, raw & EPT_R != 0);
            prot.set(Prot::WRITE, raw & EPT_W != 0);
            Pte::Leaf { paddr: raw & PADDR_MASK & !((1u64 << order) - 1), order, prot }
        } else {
            Pte::Table(raw & PADDR_MASK)
        }
    }

    fn table_entry(&self, next: PhysAddr, _level: u32) -> u64 {
        (next & PADDR_MASK) | EPT_R | EPT_W | EPT_X
    }

    fn leaf_entry(&self, paddr: PhysAddr, level: u32, _order: u32, prot: Prot) -> u64 {
        Self::leaf(paddr, level, prot, MEMORY_WB)
    }
}

impl NestedLeaf for EptFormat {
    fn device_leaf(&self, paddr: PhysAddr, level: u32, prot: Prot) -> u64 {
        Self::leaf(paddr, level, prot, MEMORY_UC)
    }

    fn is_uncached(&self, raw: u64) -> bool {
        EPT_MEMORY_TYPE.get(raw) == MEMORY_UC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ept_pointer_is_write_back_with_a_4_level_walk() {
        assert_eq!(ept_pointer(0x12_3000), 0x12_301E);
    }

    #[test]
    fn ept_leaves_carry_their_memory_type_and_npt_its_cache_bits() {
        let e = EptFormat::new(true);
        let wb = e.leaf_entry(0x20_0000, 2, 21, Prot::READ | Prot::WRITE);
        assert_eq!(wb, 0x20_0000 | 0x7 | (6 << 3) | EPT_IGNORE_PAT | EPT_LARGE);
        assert!(!e.is_uncached(wb));
        let uc = e.device_leaf(0xFEB0_0000, 1, Prot::READ | Prot::WRITE);
        assert_eq!(uc, 0xFEB0_0000 | 0x7 | EPT_IGNORE_PAT);
        assert!(e.is_uncached(uc));
        let n = NptFormat::new(false);
        assert_eq!(n.leaf_entry(0x1000, 1, 12, Prot::READ | Prot::WRITE), 0x1007);
        assert_eq!(n.device_leaf(0x1000, 1, Prot::READ | Prot::WRITE), 0x101F);
        assert_eq!(n.table_entry(0x5000, 2), 0x5007);
        assert_eq!(n.page_sizes(), 1 << 12 | 1 << 21);
    }
}
