//! The kernel heap: `linked_list_allocator` over a contiguous run of frames.

use linked_list_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Heap size: the DMA tracker keeps a record per mapping run, and a 1 GiB fragmented
/// teardown test holds a few hundred thousand of them.
pub const HEAP_SIZE: u64 = 64 << 20;

/// Takes `HEAP_SIZE` bytes of frames and hands them to the allocator.
pub fn init() -> Result<(), &'static str> {
    let start = super::frames::alloc_contiguous(HEAP_SIZE / 4096, 4096)
        .ok_or("no contiguous memory for the heap")?;
    // SAFETY: the frames were just taken from the allocator, are identity-mapped, and
    // belong to the heap from now on.
    unsafe { HEAP.lock().init(start as *mut u8, HEAP_SIZE as usize) };
    Ok(())
}
