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
    /// Index of the first nonzero word among the `n` words from `addr`, all in one frame
    /// (the engine's check that a run of entries is free). The default reads word by
    /// word; memory the CPU reaches as a slice can scan the run at once.
    fn first_nonzero(&self, addr: PhysAddr, n: usize) -> Option<usize> {
        (0..n).find(|&i| self.read_u64(addr + 8 * i as u64) != 0)
    }
    /// Writes `words` to the words from `addr`, all in one frame (a batch of leaf entries).
    /// The default writes word by word.
    fn write_words(&mut self, addr: PhysAddr, words: &[u64]) {
        for (i, &w) in words.iter().enumerate() {
            self.write_u64(addr + 8 * i as u64, w);
        }
    }
    /// Writes the `n` words from `addr`, all in one frame, with `first`, `first + step`,
    /// `first + 2 * step`, ... (a run of leaf entries whose address steps by the page
    /// size, or a run cleared with `first = step = 0`). The default writes word by word.
    fn write_run(&mut self, addr: PhysAddr, first: u64, step: u64, n: usize) {
        for i in 0..n {
            self.write_u64(addr + 8 * i as u64, first.wrapping_add(step.wrapping_mul(i as u64)));
        }
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
