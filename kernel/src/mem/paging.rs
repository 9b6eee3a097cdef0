//! The kernel's own page tables: an identity map of the boot memory map's RAM and ACPI
//! ranges (write-back), plus MMIO windows and firmware tables in reserved ranges mapped
//! uncached on demand. Anything else is unmapped,
//! so a wild pointer faults instead of reading device space.

use boot::{BootInfo, MemoryKind};
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

/// One past the highest address an identity mapping can cover: virtual addresses must
/// be canonical (47 bits with 4-level paging), which also keeps physical ones below 2^52.
const IDENTITY_LIMIT: u64 = 1 << 47;

fn map_huge(t: &mut OffsetPageTable<'static>, base: u64, flags: Flags) -> Result<(), &'static str> {
    let virt = VirtAddr::try_new(base).map_err(|_| "address is not canonical")?;
    let phys = PhysAddr::try_new(base).map_err(|_| "address beyond the physical limit")?;
    let page = Page::<Size2MiB>::containing_address(virt);
    let frame = PhysFrame::<Size2MiB>::containing_address(phys);
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

/// The 2 MiB pages covering `[start, end)`; `Err` when the range cannot be identity-mapped
/// (firmware values: past the canonical limit, or empty after overflow checks).
fn huge_pages(start: u64, end: u64) -> Result<impl Iterator<Item = u64>, &'static str> {
    if end > IDENTITY_LIMIT || start > end {
        return Err("range beyond the identity-mappable limit");
    }
    let first = start & !(HUGE - 1);
    // `end <= 2^47`, so neither the step nor the count can overflow.
    Ok((first..end).step_by(HUGE as usize))
}

/// Whether the kernel maps a memory-map range of this kind at init: RAM and the ACPI
/// ranges (tables, NVS). Reserved and bad ranges are left unmapped; whoever needs
/// something there maps it uncached on demand ([`map_mmio`], the ACPI handler).
fn mapped_at_init(kind: MemoryKind) -> bool {
    matches!(kind, MemoryKind::Usable | MemoryKind::AcpiReclaimable | MemoryKind::AcpiNvs)
}

/// Builds the identity map of every RAM and ACPI range of the memory map and switches to it.
pub fn init(info: &BootInfo) -> Result<(), &'static str> {
    let root = super::frames::alloc_zeroed().ok_or("out of frames for page tables")?;
    // SAFETY: `root` is a fresh zeroed frame, identity-mapped, used only as this PML4 for
    // the rest of the run; offset 0 is right because physical memory is identity-mapped.
    let mut t = unsafe { OffsetPageTable::new(&mut *(root as *mut PageTable), VirtAddr::new(0)) };
    let flags = Flags::PRESENT | Flags::WRITABLE | Flags::HUGE_PAGE;
    for r in info.memory_map().iter().filter(|r| mapped_at_init(r.kind)) {
        match huge_pages(r.start, r.end()) {
            Ok(pages) => {
                for a in pages {
                    map_huge(&mut t, a, flags)?;
                }
            }
            Err(e) => log::warn!(
                "[Firmware Bug] memory: range {:#x}+{:#x} not mapped: {e}",
                r.start,
                r.len
            ),
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
    let end = base.checked_add(len).ok_or("MMIO window wraps the address space")?;
    for a in huge_pages(base, end)? {
        map_huge(t, a, flags)?;
    }
    Ok(())
}

/// Maps whatever of `[base, base + len)` is not mapped yet, uncached, leaving existing
/// mappings (RAM stays write-back) alone: for firmware tables in reserved ranges.
pub fn map_unmapped(base: u64, len: u64) -> Result<(), &'static str> {
    let end = base.checked_add(len).ok_or("range wraps the address space")?;
    for a in huge_pages(base, end)? {
        if !is_mapped(a) {
            map_mmio(a, HUGE)?;
        }
    }
    Ok(())
}

/// Whether every byte of `[base, base + len)` is mapped.
pub fn is_range_mapped(base: u64, len: u64) -> bool {
    let Some(end) = base.checked_add(len) else { return false };
    match huge_pages(base, end) {
        Ok(mut pages) => pages.all(is_mapped),
        Err(_) => false,
    }
}

/// Whether `addr` is mapped (false for a non-canonical address, which never is).
pub fn is_mapped(addr: u64) -> bool {
    use x86_64::structures::paging::Translate;
    let Ok(virt) = VirtAddr::try_new(addr) else { return false };
    TABLES.lock().as_ref().is_some_and(|t| t.translate_addr(virt).is_some())
}
