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

/// Why an identity mapping could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingError {
    /// The address is not canonical (bits 63:47 not all equal), so it has no identity page.
    NotCanonical(u64),
    /// The address lies beyond what a physical address can be.
    BeyondPhysical(u64),
    /// The range ends past the identity-mappable limit (2^47) or before it starts.
    BeyondIdentityLimit {
        /// Start of the range.
        start: u64,
        /// End of the range (exclusive).
        end: u64,
    },
    /// Base plus length wraps around the address space.
    Wraps {
        /// Start of the range.
        base: u64,
        /// Its length.
        len: u64,
    },
    /// No free frame for a page table.
    OutOfFrames,
    /// The 2 MiB page sits under an existing 1 GiB page.
    HugePageCollision(u64),
    /// An existing mapping's attributes could not be changed.
    UpdateFailed(u64),
    /// The kernel's page tables are not built yet.
    NotInitialised,
}

impl core::fmt::Display for PagingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PagingError::NotCanonical(a) => write!(f, "address {a:#x} is not canonical"),
            PagingError::BeyondPhysical(a) => {
                write!(f, "address {a:#x} is beyond the physical address limit")
            }
            PagingError::BeyondIdentityLimit { start, end } => write!(
                f,
                "range {start:#x}-{end:#x} is beyond the identity-mappable limit ({IDENTITY_LIMIT:#x})"
            ),
            PagingError::Wraps { base, len } => {
                write!(f, "range {base:#x}+{len:#x} wraps the address space")
            }
            PagingError::OutOfFrames => f.write_str("out of frames for page tables"),
            PagingError::HugePageCollision(a) => {
                write!(f, "the mapping at {a:#x} collides with a 1 GiB page")
            }
            PagingError::UpdateFailed(a) => write!(f, "cannot update the mapping at {a:#x}"),
            PagingError::NotInitialised => f.write_str("paging is not initialised"),
        }
    }
}

/// One past the highest address an identity mapping can cover: virtual addresses must
/// be canonical (47 bits with 4-level paging), which also keeps physical ones below 2^52.
const IDENTITY_LIMIT: u64 = 1 << 47;

fn map_huge(t: &mut OffsetPageTable<'static>, base: u64, flags: Flags) -> Result<(), PagingError> {
    let virt = VirtAddr::try_new(base).map_err(|_| PagingError::NotCanonical(base))?;
    let phys = PhysAddr::try_new(base).map_err(|_| PagingError::BeyondPhysical(base))?;
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
            let flush = unsafe { t.update_flags(page, flags) }
                .map_err(|_| PagingError::UpdateFailed(base))?;
            flush.flush();
            Ok(())
        }
        Err(MapToError::FrameAllocationFailed) => Err(PagingError::OutOfFrames),
        Err(MapToError::ParentEntryHugePage) => Err(PagingError::HugePageCollision(base)),
    }
}

/// The 2 MiB pages covering `[start, end)`; `Err` when the range cannot be identity-mapped
/// (firmware values: past the canonical limit, or empty after overflow checks).
fn huge_pages(start: u64, end: u64) -> Result<impl Iterator<Item = u64>, PagingError> {
    if end > IDENTITY_LIMIT || start > end {
        return Err(PagingError::BeyondIdentityLimit { start, end });
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
pub fn init(info: &BootInfo) -> Result<(), PagingError> {
    let root = super::frames::alloc_zeroed().ok_or(PagingError::OutOfFrames)?;
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
pub fn map_mmio(base: u64, len: u64) -> Result<(), PagingError> {
    let mut guard = TABLES.lock();
    let t = guard.as_mut().ok_or(PagingError::NotInitialised)?;
    let flags = Flags::PRESENT
        | Flags::WRITABLE
        | Flags::HUGE_PAGE
        | Flags::NO_CACHE
        | Flags::WRITE_THROUGH;
    let end = base.checked_add(len).ok_or(PagingError::Wraps { base, len })?;
    for a in huge_pages(base, end)? {
        map_huge(t, a, flags)?;
    }
    Ok(())
}

/// Maps whatever of `[base, base + len)` is not mapped yet, uncached, leaving existing
/// mappings (RAM stays write-back) alone: for firmware tables in reserved ranges.
pub fn map_unmapped(base: u64, len: u64) -> Result<(), PagingError> {
    let end = base.checked_add(len).ok_or(PagingError::Wraps { base, len })?;
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
