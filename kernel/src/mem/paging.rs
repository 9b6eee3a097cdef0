//! The kernel's own page tables: an identity map of every range in the boot memory map
//! (write-back), plus MMIO windows mapped uncached on demand. Anything else is unmapped,
//! so a wild pointer faults instead of reading device space.

use boot::BootInfo;
use spin::Mutex;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame,
    Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

const HUGE: u64 = 2 << 20;

static TABLES: Mutex<Option<OffsetPageTable<'static>>> = Mutex::new(None);

struct TableFrames;

// SAFETY: every frame returned comes from the global allocator, is zeroed, unused and
// identity-mapped (the allocator hands out low memory first, which the boot tables map).
unsafe impl FrameAllocator<Size4KiB> for TableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        super::frames::alloc_zeroed().map(|a| PhysFrame::containing_address(PhysAddr::new(a)))
    }
}

fn map_huge(t: &mut OffsetPageTable<'static>, base: u64, flags: Flags) -> Result<(), &'static str> {
    let page = Page::<Size2MiB>::containing_address(VirtAddr::new(base));
    let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(base));
    // SAFETY: an identity mapping of physical memory (or device space) at its own
    // address: no existing virtual mapping changes meaning.
    match unsafe { t.map_to(page, frame, flags, &mut TableFrames) } {
        Ok(flush) => {
            flush.flush();
            Ok(())
        }
        Err(MapToError::PageAlreadyMapped(_)) => {
            // SAFETY: same identity mapping; only the caching attributes change.
            let flush =
                unsafe { t.update_flags(page, flags) }.map_err(|_| "cannot update a mapping")?;
            flush.flush();
            Ok(())
        }
        Err(MapToError::FrameAllocationFailed) => Err("out of frames for page tables"),
        Err(MapToError::ParentEntryHugePage) => Err("mapping collides with a huge page"),
    }
}

/// Builds the identity map of every memory-map range and switches to it.
pub fn init(info: &BootInfo) -> Result<(), &'static str> {
    let root = super::frames::alloc_zeroed().ok_or("out of frames for page tables")?;
    // SAFETY: `root` is a fresh zeroed frame, identity-mapped, used only as this PML4 for
    // the rest of the run; offset 0 is right because physical memory is identity-mapped.
    let mut t = unsafe { OffsetPageTable::new(&mut *(root as *mut PageTable), VirtAddr::new(0)) };
    let flags = Flags::PRESENT | Flags::WRITABLE | Flags::HUGE_PAGE;
    for r in info.memory_map() {
        let mut a = r.start & !(HUGE - 1);
        while a < r.end() {
            map_huge(&mut t, a, flags)?;
            a += HUGE;
        }
    }
    // SAFETY: the new tables map the running kernel (image, stack, heap and every RAM
    // range) at the same addresses as the boot tables did.
    unsafe { Cr3::write(PhysFrame::containing_address(PhysAddr::new(root)), Cr3Flags::empty()) };
    *TABLES.lock() = Some(t);
    Ok(())
}

/// Maps the device window `[base, base + len)` identity, uncached (PCD | PWT).
pub fn map_mmio(base: u64, len: u64) -> Result<(), &'static str> {
    let mut guard = TABLES.lock();
    let t = guard.as_mut().ok_or("paging not initialised")?;
    let flags = Flags::PRESENT
        | Flags::WRITABLE
        | Flags::HUGE_PAGE
        | Flags::NO_CACHE
        | Flags::WRITE_THROUGH;
    let mut a = base & !(HUGE - 1);
    while a < base.saturating_add(len) {
        map_huge(t, a, flags)?;
        a += HUGE;
    }
    Ok(())
}

/// Whether `addr` is mapped (for diagnostics).
pub fn is_mapped(addr: u64) -> bool {
    use x86_64::structures::paging::Translate;
    TABLES.lock().as_ref().is_some_and(|t| t.translate_addr(VirtAddr::new(addr)).is_some())
}
