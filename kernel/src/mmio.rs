//! Register windows: a device's MMIO range mapped uncached and accessed volatile, with
//! every offset bounds- and alignment-checked (a register offset derived from a capability
//! register is hardware input too).

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use volatile::VolatilePtr;

/// A mapped MMIO window. Implements the `iommu` crate's `Mmio` for the unit drivers and
/// serves the edu and APIC drivers directly.
#[derive(Debug)]
pub struct MmioWindow {
    base: u64,
    len: usize,
    /// Whether a bad access was already reported (once per window is enough).
    complained: AtomicBool,
}

/// A register width the window serves.
trait Register: Copy {
    /// What a read outside the window returns: all ones, like a read of absent device
    /// space, so "wait until a bit clears" polls time out instead of succeeding.
    const ABSENT: Self;
}

impl Register for u32 {
    const ABSENT: u32 = u32::MAX;
}

impl Register for u64 {
    const ABSENT: u64 = u64::MAX;
}

/// Why a device window could not be mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioError {
    /// The window starts at address 0 or wraps the address space (a firmware value).
    BadWindow {
        /// Its base.
        base: u64,
        /// Its length.
        len: usize,
    },
    /// The page tables refused the mapping.
    Paging(crate::mem::paging::PagingError),
}

impl core::fmt::Display for MmioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmioError::BadWindow { base, len } => {
                write!(f, "MMIO window {base:#x}+{len:#x} starts at 0 or wraps")
            }
            MmioError::Paging(e) => write!(f, "mapping the MMIO window: {e}"),
        }
    }
}

/// Narrative code and the in-kernel tests report failures as text: the error becomes its
/// words there, where it is printed.
impl From<MmioError> for alloc::string::String {
    fn from(e: MmioError) -> Self {
        alloc::string::ToString::to_string(&e)
    }
}

impl MmioWindow {
    /// Maps `[base, base + len)` uncached and returns the window.
    pub fn map(base: u64, len: usize) -> Result<MmioWindow, MmioError> {
        if base == 0 || base.checked_add(len as u64).is_none() {
            return Err(MmioError::BadWindow { base, len });
        }
        crate::mem::paging::map_mmio(base, len as u64).map_err(MmioError::Paging)?;
        Ok(MmioWindow { base, len, complained: AtomicBool::new(false) })
    }

    /// The window's physical base.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The window's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn ptr<T>(&self, offset: usize) -> Option<NonNull<T>> {
        let size = core::mem::size_of::<T>();
        if !offset.is_multiple_of(size) || offset.checked_add(size)? > self.len {
            if !self.complained.swap(true, Ordering::Relaxed) {
                log::error!(
                    "mmio: bad access of {size} bytes at {:#x}+{offset:#x} (window {:#x} bytes): \
                     reads return all ones, writes are dropped (reported once per window)",
                    self.base,
                    self.len
                );
            }
            return None;
        }
        NonNull::new((self.base + offset as u64) as *mut T)
    }

    fn read<T: Register>(&self, offset: usize) -> T {
        match self.ptr::<T>(offset) {
            // SAFETY: the window is mapped uncached (see `map`), the access is inside it
            // and naturally aligned, and device registers have no Rust-visible aliasing.
            Some(p) => unsafe { VolatilePtr::new(p) }.read(),
            None => T::ABSENT,
        }
    }

    fn write<T: Copy>(&mut self, offset: usize, value: T) {
        if let Some(p) = self.ptr::<T>(offset) {
            // SAFETY: as for `read`.
            unsafe { VolatilePtr::new(p) }.write(value)
        }
    }

    /// 32-bit read.
    pub fn read32(&self, offset: usize) -> u32 {
        self.read(offset)
    }

    /// 64-bit read.
    pub fn read64(&self, offset: usize) -> u64 {
        self.read(offset)
    }

    /// 32-bit write.
    pub fn write32(&mut self, offset: usize, value: u32) {
        self.write(offset, value)
    }

    /// 64-bit write.
    pub fn write64(&mut self, offset: usize, value: u64) {
        self.write(offset, value)
    }
}

impl iommu::platform::Mmio for MmioWindow {
    fn read32(&self, offset: usize) -> u32 {
        MmioWindow::read32(self, offset)
    }
    fn read64(&self, offset: usize) -> u64 {
        MmioWindow::read64(self, offset)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        MmioWindow::write32(self, offset, value)
    }
    fn write64(&mut self, offset: usize, value: u64) {
        MmioWindow::write64(self, offset, value)
    }
}
