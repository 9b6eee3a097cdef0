//! Nested page tables: guest-physical -> host-physical, 4 levels, in AMD's NPT format
//! (SVM) or Intel's EPT format (VMX). How an entry is encoded is the shared page-table
//! engine's (`iommu::pgtable::nested`, where both formats pass the contract test every
//! format passes); this file keeps the tables' frames and walks them. Guest RAM is
//! write-back; device windows are mapped uncached.

use super::memory::GuestMemory;
use crate::mem::frames;
use alloc::vec::Vec;
use core::fmt;
use iommu::pgtable::nested::{EptFormat, NestedLeaf, NptFormat};
use iommu::pgtable::{Prot, Pte, PteFormat};

const SMALL: u64 = 4 << 10;
const HUGE: u64 = 2 << 20;
/// Guest-physical addresses the tables can describe (48 bits).
const GPA_LIMIT: u64 = 1 << 48;

/// Why a nested mapping was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NptError {
    /// No frame for a table.
    OutOfFrames,
    /// Address or size not aligned to the page size, or beyond 48 bits.
    Misaligned(u64),
    /// Something is already mapped there.
    AlreadyMapped(u64),
}

impl fmt::Display for NptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NptError::OutOfFrames => f.write_str("out of frames for nested page tables"),
            NptError::Misaligned(a) => write!(f, "nested mapping at {a:#x} is misaligned"),
            NptError::AlreadyMapped(a) => write!(f, "guest-physical {a:#x} is already mapped"),
        }
    }
}

/// Cacheability of a nested mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    /// Guest RAM: write-back.
    WriteBack,
    /// Device registers: uncached.
    Uncached,
}

/// Which CPU format the tables are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedFormat {
    /// AMD NPT (the VMCB's nested CR3).
    Npt(NptFormat),
    /// Intel EPT (the VMCS's EPT pointer).
    Ept(EptFormat),
}

impl NestedFormat {
    fn decode(&self, raw: u64, level: u32) -> Pte {
        match self {
            NestedFormat::Npt(f) => f.decode(raw, level),
            NestedFormat::Ept(f) => f.decode(raw, level),
        }
    }

    fn table_entry(&self, next: u64, level: u32) -> u64 {
        match self {
            NestedFormat::Npt(f) => f.table_entry(next, level),
            NestedFormat::Ept(f) => f.table_entry(next, level),
        }
    }

    fn leaf(&self, paddr: u64, level: u32, ty: MemoryType) -> u64 {
        let prot = Prot::READ | Prot::WRITE;
        let order = iommu::pgtable::level_shift(level);
        match (self, ty) {
            (NestedFormat::Npt(f), MemoryType::WriteBack) => {
                f.leaf_entry(paddr, level, order, prot)
            }
            (NestedFormat::Npt(f), MemoryType::Uncached) => f.device_leaf(paddr, level, prot),
            (NestedFormat::Ept(f), MemoryType::WriteBack) => {
                f.leaf_entry(paddr, level, order, prot)
            }
            (NestedFormat::Ept(f), MemoryType::Uncached) => f.device_leaf(paddr, level, prot),
        }
    }

    fn is_uncached(&self, raw: u64) -> bool {
        match self {
            NestedFormat::Npt(f) => f.is_uncached(raw),
            NestedFormat::Ept(f) => f.is_uncached(raw),
        }
    }
}

/// One partition's nested page tables; every table frame is owned here.
pub struct NestedTables {
    format: NestedFormat,
    root: u64,
    tables: Vec<u64>,
    /// Leaf entries written, by size: (4 KiB, 2 MiB), for the logs and tests.
    pub leaves: (u64, u64),
}

/// Entry `index` (taken mod 512, so always inside the table) of the table at `table`.
fn entry(table: u64, index: u64) -> *mut u64 {
    (table + (index % 512) * 8) as *mut u64
}

/// Reads entry `index` of a nested table.
///
/// # Safety
/// `table` must be the root or a frame in `NestedTables::tables` of a live
/// `NestedTables` (identity-mapped frames it allocated and still owns).
unsafe fn read(table: u64, index: u64) -> u64 {
    // SAFETY: the caller guarantees `table` is one of our table frames; `entry` keeps the
    // access inside it.
    unsafe { core::ptr::read_volatile(entry(table, index)) }
}

/// Writes entry `index` of a nested table.
///
/// # Safety
/// As for [`read`]; also the partition's vCPU must not be running.
unsafe fn write(table: u64, index: u64, value: u64) {
    // SAFETY: as for `read`, guaranteed by the caller.
    unsafe { core::ptr::write_volatile(entry(table, index), value) }
}

fn index(gpa: u64, level: u32) -> u64 {
    (gpa >> (12 + 9 * (level - 1))) & 511
}

impl NestedTables {
    /// Empty tables (a zeroed root) in `format`.
    pub fn with_format(format: NestedFormat) -> Result<NestedTables, NptError> {
        let root = frames::alloc_zeroed().ok_or(NptError::OutOfFrames)?;
        Ok(NestedTables { format, root, tables: Vec::new(), leaves: (0, 0) })
    }

    /// The root's host-physical address (the VMCB's nested CR3; the EPT pointer's
    /// address part).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The table at `level` (1 = PT, 2 = PD) covering `gpa`, created on the way.
    fn table_for(&mut self, gpa: u64, level: u32) -> Result<u64, NptError> {
        let mut table = self.root;
        for l in (level + 1..=4).rev() {
            let i = index(gpa, l);
            // SAFETY: `table` is the root or came from a non-leaf entry, and only this
            // code writes non-leaf entries, always with a frame pushed on `self.tables`.
            let e = unsafe { read(table, i) };
            match self.format.decode(e, l) {
                Pte::Empty => {
                    let t = frames::alloc_zeroed().ok_or(NptError::OutOfFrames)?;
                    self.tables.push(t);
                    // SAFETY: as above (`&mut self`: the vCPU is not running).
                    unsafe { write(table, i, self.format.table_entry(t, l)) };
                    table = t;
                }
                Pte::Leaf { .. } => return Err(NptError::AlreadyMapped(gpa)),
                Pte::Table(t) => table = t,
            }
        }
        Ok(table)
    }

    /// Maps one page of `size` (4 KiB or 2 MiB) at `gpa` to `hpa`.
    pub fn map_page(
        &mut self,
        gpa: u64,
        hpa: u64,
        size: u64,
        ty: MemoryType,
    ) -> Result<(), NptError> {
        let level = if size == HUGE { 2 } else { 1 };
        if !gpa.is_multiple_of(size)
            || !hpa.is_multiple_of(size)
            || gpa >= GPA_LIMIT
            || (size != SMALL && size != HUGE)
        {
            return Err(NptError::Misaligned(gpa));
        }
        let table = self.table_for(gpa, level)?;
        let i = index(gpa, level);
        // SAFETY: `table_for` returns the root or one of `self.tables`.
        if self.format.decode(unsafe { read(table, i) }, level) != Pte::Empty {
            return Err(NptError::AlreadyMapped(gpa));
        }
        if level == 2 {
            self.leaves.1 += 1;
        } else {
            self.leaves.0 += 1;
        }
        // SAFETY: as above; `&mut self`, so the vCPU is not running.
        unsafe { write(table, i, self.format.leaf(hpa, level, ty)) };
        Ok(())
    }

    /// Maps all of `mem` at guest-physical 0, with leaves of its backing page size.
    pub fn map_memory(&mut self, mem: &GuestMemory) -> Result<(), NptError> {
        let page = mem.backing().page_size();
        for (n, &hpa) in mem.chunks().iter().enumerate() {
            self.map_page(n as u64 * page, hpa, page, MemoryType::WriteBack)?;
        }
        Ok(())
    }

    /// Maps a device window (a BAR) uncached, 4 KiB at a time: `[gpa, gpa + size)` ->
    /// `[hpa, hpa + size)`. The guest then drives the device's registers itself.
    pub fn map_device(&mut self, gpa: u64, hpa: u64, size: u64) -> Result<(), NptError> {
        if size == 0
            || !size.is_multiple_of(SMALL)
            || gpa.checked_add(size).is_none_or(|e| e > GPA_LIMIT)
            || hpa.checked_add(size).is_none()
        {
            return Err(NptError::Misaligned(gpa));
        }
        let mut off = 0;
        while off < size {
            self.map_page(gpa + off, hpa + off, SMALL, MemoryType::Uncached)?;
            off += SMALL;
        }
        Ok(())
    }

    /// Walks the tables: the host-physical address and leaf size behind `gpa`.
    pub fn translate(&self, gpa: u64) -> Option<(u64, u64, MemoryType)> {
        let mut table = self.root;
        for level in (1..=4).rev() {
            // SAFETY: the root, or a table named by a non-leaf entry, which only
            // `table_for` writes, always with a frame of `self.tables`.
            let e = unsafe { read(table, index(gpa, level)) };
            match self.format.decode(e, level) {
                Pte::Empty => return None,
                Pte::Leaf { paddr, order, .. } => {
                    let ty = if self.format.is_uncached(e) {
                        MemoryType::Uncached
                    } else {
                        MemoryType::WriteBack
                    };
                    let size = 1u64 << order;
                    return Some((paddr + gpa % size, size, ty));
                }
                Pte::Table(t) => table = t,
            }
        }
        None
    }
}

impl Drop for NestedTables {
    fn drop(&mut self) {
        // Tables hold host addresses: zero them before the frames are reused.
        for &t in self.tables.iter().chain(core::iter::once(&self.root)) {
            frames::zero(t, SMALL);
            frames::free(t);
        }
    }
}
