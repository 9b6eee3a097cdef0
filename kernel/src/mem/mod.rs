//! Physical memory: the frame allocator, the heap and the kernel's page tables.
//!
//! Physical memory is identity-mapped (virtual address == physical address), so a frame's
//! address is also a pointer to it. [`KernelMemory`] gives the IOMMU crate that view.

pub mod frames;
pub mod heap;
pub mod paging;

use iommu::platform::{FrameAllocator, PhysAddr, PhysMemory};

/// The IOMMU crate's view of memory: frames from the global allocator, reached through
/// the identity map. Zero-sized, so every driver and domain can own one.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelMemory;

impl FrameAllocator for KernelMemory {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        frames::alloc_zeroed()
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        frames::free(frame);
    }
}

impl PhysMemory for KernelMemory {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        // SAFETY: all RAM is identity-mapped; the IOMMU code only names addresses of frames
        // it allocated (tables, queues) and reads them 8-byte aligned, volatile because
        // the IOMMU writes some of them (status words, event logs).
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    }

    fn write_u64(&mut self, addr: PhysAddr, value: u64) {
        // SAFETY: as for `read_u64`: an aligned word of a frame the IOMMU code owns.
        unsafe { core::ptr::write_volatile(addr as *mut u64, value) }
    }

    fn flush_for_device(&mut self, addr: PhysAddr, len: u64) {
        // For IOMMUs that do not snoop CPU caches: write back every line of the range.
        let mut line = addr & !63;
        while line < addr.saturating_add(len) {
            // SAFETY: clflush on an identity-mapped RAM address has no effect but cache
            // write-back; it cannot fault for mapped memory.
            unsafe { core::arch::asm!("clflush [{}]", in(reg) line, options(nostack)) };
            line += 64;
        }
        // SAFETY: a fence has no memory-safety preconditions.
        unsafe { core::arch::asm!("mfence", options(nostack)) };
    }
}
