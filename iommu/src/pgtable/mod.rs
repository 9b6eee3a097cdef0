//! One page-table engine for the IOMMU formats and the CPU's nested tables.
//!
//! [`PageTable`] does map, unmap, iova-to-phys and leaf walks over any [`PteFormat`];
//! [`vtd::VtdFormat`] (VT-d second level), [`amdv1::AmdV1Format`] (AMD-Vi v1 with
//! NextLevel-7 pages), [`nested::NptFormat`] (AMD NPT) and [`nested::EptFormat`] (Intel
//! EPT) only say how one entry is encoded and decoded; each passes the same contract
//! test (`contract.rs`).

pub mod amdv1;
#[cfg(test)]
mod contract;
mod engine;
pub mod nested;
#[cfg(test)]
mod tests;
pub mod vtd;
mod walk;

pub use engine::{drain_subtree, Detached, PageTable, Unmapped};
pub use walk::LeafRun;

use crate::platform::{FrameAllocator, PhysAddr, PhysMemory};

/// Memory the engine needs: frames for table pages and word access to them.
pub trait TableMemory: FrameAllocator + PhysMemory {}
impl<T: FrameAllocator + PhysMemory> TableMemory for T {}

/// Number of entries in every table page of both formats.
pub const ENTRIES: usize = 512;

/// Highest physical address bit either format can encode (bits 51:12).
pub const PADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

bitflags::bitflags! {
    /// Access a device gets through a mapping.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Prot: u8 {
        /// DMA reads allowed.
        const READ = 1;
        /// DMA writes allowed.
        const WRITE = 2;
    }
}

/// One decoded table entry, as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pte {
    /// Nothing mapped through this entry.
    Empty,
    /// Points at the table of the next level down.
    Table(PhysAddr),
    /// A page of `2^order` bytes starting at `paddr` (the page's base, not the entry's).
    Leaf {
        /// Physical base of the whole page.
        paddr: PhysAddr,
        /// log2 of the page size.
        order: u32,
        /// Access the leaf grants.
        prot: Prot,
    },
}

/// How one IOMMU format encodes its entries. Levels count from 1 (the 4 KiB leaf table).
pub trait PteFormat: Clone + core::fmt::Debug {
    /// Number of table levels (3 or 4 for VT-d, the DTE mode for AMD-Vi).
    fn levels(&self) -> u32;
    /// Bit `n` set means pages of `2^n` bytes can be mapped.
    fn page_sizes(&self) -> u64;
    /// log2 of the IOVA aperture: the depth's full width unless the unit has less.
    fn address_bits(&self) -> u32 {
        level_shift(self.levels()) + 9
    }
    /// Decodes an entry of a table at `level` that this engine wrote.
    fn decode(&self, raw: u64, level: u32) -> Pte;
    /// An entry at `level` pointing at the table `next` one level down.
    fn table_entry(&self, next: PhysAddr, level: u32) -> u64;
    /// One (of possibly several replicated) entries at `level` for a page of `2^order`
    /// bytes at `paddr`.
    fn leaf_entry(&self, paddr: PhysAddr, level: u32, order: u32, prot: Prot) -> u64;
}

/// Why a map or unmap was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Address or size not a multiple of 4 KiB, zero size, or outside the address width.
    BadRange,
    /// Part of the range is already mapped.
    AlreadyMapped {
        /// First IOVA found in use.
        iova: u64,
    },
    /// The frame allocator ran dry.
    OutOfMemory,
    /// A mapping without any access cannot be expressed.
    NoAccess,
    /// The range overlaps an IOVA window no domain may map (see
    /// [`crate::domain::RESERVED_IOVA`]): the interrupt window or AMD's HyperTransport range.
    Reserved {
        /// Start of the reserved window hit.
        window: u64,
    },
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::BadRange => f.write_str("misaligned or out-of-range IOVA/size"),
            MapError::AlreadyMapped { iova } => write!(f, "IOVA {iova:#x} already mapped"),
            MapError::OutOfMemory => f.write_str("out of memory for page tables"),
            MapError::NoAccess => f.write_str("mapping without read or write access"),
            MapError::Reserved { window } => write!(
                f,
                "IOVA range overlaps the reserved window at {window:#x} (interrupts / HyperTransport)"
            ),
        }
    }
}

/// log2 of the bytes one entry of a table at `level` covers.
pub const fn level_shift(level: u32) -> u32 {
    12 + 9 * (level - 1)
}

/// Index of `iova` in a table at `level`.
pub const fn level_index(iova: u64, level: u32) -> usize {
    ((iova >> level_shift(level)) & (ENTRIES as u64 - 1)) as usize
}

/// Bitmap of every power-of-two size from `2^lo` to `2^hi` bytes.
pub const fn size_range(lo: u32, hi: u32) -> u64 {
    ((1u64 << (hi + 1)) - 1) & !((1u64 << lo) - 1)
}
