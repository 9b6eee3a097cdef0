//! Nested page tables (AMD NPT): guest-physical -> host-physical, the long-mode 4-level
//! format. The processor walks them as user accesses, so every level sets U/S. Guest RAM
//! is write-back; device windows are mapped uncached (PCD | PWT).

use super::memory::GuestMemory;
use crate::mem::frames;
use alloc::vec::Vec;
use core::fmt;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const WRITE_THROUGH: u64 = 1 << 3;
const NO_CACHE: u64 = 1 << 4;
const LARGE: u64 = 1 << 7;
const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
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

/// One partition's nested page tables; every table frame is owned here.
pub struct NestedTables {
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
    /// Empty tables (a zeroed root).
    pub fn new() -> Result<NestedTables, NptError> {
        let root = frames::alloc_zeroed().ok_or(NptError::OutOfFrames)?;
        Ok(NestedTables { root, tables: Vec::new(), leaves: (0, 0) })
    }

    /// The root's host-physical address (the VMCB's nested CR3).
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
            if e & PRESENT == 0 {
                let t = frames::alloc_zeroed().ok_or(NptError::OutOfFrames)?;
                self.tables.push(t);
                // SAFETY: as above (`&mut self`: the vCPU is not running).
                unsafe { write(table, i, t | PRESENT | WRITABLE | USER) };
                table = t;
            } else if e & LARGE != 0 {
                return Err(NptError::AlreadyMapped(gpa));
            } else {
                table = e & ADDRESS;
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
        if unsafe { read(table, i) } & PRESENT != 0 {
            return Err(NptError::AlreadyMapped(gpa));
        }
        let mut flags = PRESENT | WRITABLE | USER;
        if ty == MemoryType::Uncached {
            flags |= NO_CACHE | WRITE_THROUGH;
        }
        if level == 2 {
            flags |= LARGE;
            self.leaves.1 += 1;
        } else {
            self.leaves.0 += 1;
        }
        // SAFETY: as above; `&mut self`, so the vCPU is not running.
        unsafe { write(table, i, hpa | flags) };
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
            if e & PRESENT == 0 {
                return None;
            }
            let ty = if e & NO_CACHE != 0 { MemoryType::Uncached } else { MemoryType::WriteBack };
            if level == 1 || (level == 2 && e & LARGE != 0) {
                let size = if level == 1 { SMALL } else { HUGE };
                return Some(((e & ADDRESS & !(size - 1)) + gpa % size, size, ty));
            }
            table = e & ADDRESS;
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
