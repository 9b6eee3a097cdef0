//! The narrow interface between IOMMU code and the machine it runs on.
//!
//! The kernel implements these over real memory and MMIO; host tests implement them over
//! a `Vec` of pages and a register model. Nothing else in this crate touches hardware.

/// A physical address.
pub type PhysAddr = u64;

/// Size of the IOMMU's base page and of every table page.
pub const PAGE_SIZE: u64 = 4096;

/// Hands out and takes back 4 KiB physical frames for tables, queues and buffers.
pub trait FrameAllocator {
    /// A zero-filled, 4 KiB-aligned frame, or `None` when memory is exhausted.
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr>;
    /// Gives a frame from `alloc_zeroed_frame` back.
    fn free_frame(&mut self, frame: PhysAddr);
}

/// Reads and writes physical memory that the IOMMU also reads (tables, queues).
pub trait PhysMemory {
    /// Reads the naturally aligned 64-bit word at `addr`.
    fn read_u64(&self, addr: PhysAddr) -> u64;
    /// Writes the naturally aligned 64-bit word at `addr`.
    fn write_u64(&mut self, addr: PhysAddr, value: u64);
    /// Makes CPU writes to `[addr, addr + len)` visible to a non-coherent IOMMU
    /// (clflush on x86). The default does nothing, which is right for coherent units.
    fn flush_for_device(&mut self, addr: PhysAddr, len: u64) {
        let _ = (addr, len);
    }
}

/// A remapping unit's register window. Offsets are bytes from the window's base.
///
/// Both VT-d and AMD-Vi accept only 4- and 8-byte accesses; there is no byte access here.
pub trait Mmio {
    /// 32-bit register read.
    fn read32(&self, offset: usize) -> u32;
    /// 64-bit register read.
    fn read64(&self, offset: usize) -> u64;
    /// 32-bit register write.
    fn write32(&mut self, offset: usize, value: u32);
    /// 64-bit register write.
    fn write64(&mut self, offset: usize, value: u64);
}

/// How many times a driver re-reads a register or memory word while waiting for the
/// hardware before it reports [`HwError::Timeout`](crate::error::HwError::Timeout).
/// An uncached read costs about a microsecond on hardware and under QEMU, so this is
/// on the order of a second.
pub const POLL_LIMIT: u32 = 1_000_000;

/// Evaluates `done` up to `limit` times, with a spin-loop hint between tries; true as soon
/// as it held. The one bounded wait loop both drivers build their hardware polls on.
pub fn poll_until(limit: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..limit {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}
