//! The physical frame allocator: one bit per 4 KiB frame of RAM (1 = free), and one more
//! (1 = dirty) for frames given back without being zeroed.
//!
//! Built from the boot memory map, minus the first MiB (firmware, BIOS data), the kernel
//! image, boot modules and the bitmaps themselves. Single and contiguous, aligned
//! allocations (for 2 MiB-backed partitions and large DMA buffers).
//!
//! Dirty frames: a destroyed partition's memory comes back through [`free_dirty`], still
//! holding the guest's data, so the destroy does not wait for the scrub. Every allocation
//! path zeroes the dirty frames it hands out before returning them (a later owner never
//! sees old data), and [`scrub_dirty`] zeroes them off the destroy path (at idle
//! points: the end of the partition run, [`scrub_idle`]) with non-temporal stores, so
//! allocation rarely has to. The kernel brings up no other CPU, so there is no other CPU
//! to hand the scrub to; a claimed run is out of the free pool while it is zeroed, so
//! the same code is safe to run on one.

use boot::{BootInfo, MemoryKind};
use spin::Mutex;

const FRAME: u64 = 4096;
/// What the boot tables identity-map before `paging::init`: [0, 4 GiB).
const BOOT_MAPPED: u64 = 1 << 32;
/// One past the highest physical address x86-64 page tables can hold (52 bits).
const MAX_PHYS: u64 = 1 << 52;

struct FrameBitmap {
    bits: &'static mut [u64],
    /// 1 = free and not yet zeroed.
    dirty: &'static mut [u64],
    dirty_count: u64,
    frames: u64,
    free: u64,
    hint: u64,
}

static FRAMES: Mutex<Option<FrameBitmap>> = Mutex::new(None);

impl FrameBitmap {
    fn is_free(&self, f: u64) -> bool {
        f < self.frames && self.bits[(f / 64) as usize] & (1 << (f % 64)) != 0
    }

    fn set(&mut self, f: u64, free: bool) {
        if f >= self.frames || self.is_free(f) == free {
            return;
        }
        let w = &mut self.bits[(f / 64) as usize];
        if free {
            *w |= 1 << (f % 64);
            self.free += 1;
        } else {
            *w &= !(1 << (f % 64));
            self.free -= 1;
        }
    }

    fn is_dirty(&self, f: u64) -> bool {
        f < self.frames && self.dirty[(f / 64) as usize] & (1 << (f % 64)) != 0
    }

    fn set_dirty(&mut self, f: u64, dirty: bool) {
        if f >= self.frames || self.is_dirty(f) == dirty {
            return;
        }
        let w = &mut self.dirty[(f / 64) as usize];
        if dirty {
            *w |= 1 << (f % 64);
            self.dirty_count += 1;
        } else {
            *w &= !(1 << (f % 64));
            self.dirty_count -= 1;
        }
    }

    /// Takes the dirty marks off `[f, f + count)` (just allocated) and says which runs
    /// the caller must zero before use.
    fn take_dirty(&mut self, f: u64, count: u64, out: &mut DirtyRuns) {
        if self.dirty_count == 0 {
            return;
        }
        for g in f..f + count {
            if self.is_dirty(g) {
                self.set_dirty(g, false);
                out.push(g);
            }
        }
    }

    fn set_range(&mut self, start: u64, end: u64, free: bool) {
        // Free only whole frames inside the range; reserve every frame it touches.
        let (first, last) = if free {
            (start.div_ceil(FRAME), end / FRAME)
        } else {
            (start / FRAME, end.div_ceil(FRAME))
        };
        for f in first..last.min(self.frames) {
            self.set(f, free);
        }
    }

    fn alloc_run(&mut self, count: u64, align: u64) -> Option<u64> {
        let align = align.max(1);
        let mut f = self.hint.next_multiple_of(align);
        let mut wrapped = false;
        loop {
            if f + count > self.frames {
                if wrapped {
                    return None;
                }
                wrapped = true;
                f = 0;
                continue;
            }
            // Skip whole empty words fast when looking for single frames.
            if count == 1 && self.bits[(f / 64) as usize] == 0 {
                f = (f / 64 + 1) * 64;
                continue;
            }
            match (f..f + count).find(|&g| !self.is_free(g)) {
                None => {
                    for g in f..f + count {
                        self.set(g, false);
                    }
                    self.hint = f + count;
                    return Some(f);
                }
                Some(busy) => f = (busy + 1).next_multiple_of(align),
            }
            if wrapped && f >= self.hint {
                return None;
            }
        }
    }
}

/// Builds the allocator. `reserved` lists extra ranges to keep (kernel image, modules).
pub fn init(info: &BootInfo, reserved: &[(u64, u64)]) -> Result<(), &'static str> {
    // A usable range whose end overflows or lies past the 52-bit physical address limit
    // is a firmware bug: it is skipped (and said once), not trusted.
    let sane = |r: &&boot::MemoryRegion| r.start.checked_add(r.len).is_some_and(|e| e <= MAX_PHYS);
    for r in info.memory_map().iter().filter(|r| r.kind == MemoryKind::Usable && !sane(r)) {
        log::warn!(
            "[Firmware Bug] memory: usable range {:#x}+{:#x} is impossible; skipped",
            r.start,
            r.len
        );
    }
    let usable = || info.memory_map().iter().filter(|r| r.kind == MemoryKind::Usable).filter(sane);
    let top = usable().map(|r| r.end()).max().ok_or("no usable memory")?;
    let frames = top / FRAME;
    let words = frames.div_ceil(64);
    // The free bitmap, then the dirty bitmap.
    let bytes = 2 * words * 8;
    // Place the bitmap in the first usable range above 1 MiB that has room and overlaps
    // nothing reserved, below 4 GiB: this runs before `paging::init`, when only the boot
    // tables' identity map of [0, 4 GiB) exists. Memory-map values are firmware input:
    // a range whose arithmetic overflows is skipped.
    let clear_of = |s: u64, e: u64| reserved.iter().all(|&(rs, re)| e <= rs || s >= re);
    let limit = |r: &boot::MemoryRegion| r.end().min(BOOT_MAPPED);
    let mut place = None;
    for r in usable() {
        let mut next = r.start.max(0x10_0000).checked_next_multiple_of(FRAME);
        while let Some(s) = next {
            let Some(e) = s.checked_add(bytes).filter(|&e| e <= limit(r)) else { break };
            if clear_of(s, e) {
                place = Some(s);
                break;
            }
            next = s.checked_add(0x10_0000);
        }
        if place.is_some() {
            break;
        }
    }
    let at = place.ok_or("no room for the frame bitmap below 4 GiB")?;
    // SAFETY: [at, at + bytes) is usable RAM below 4 GiB (identity-mapped by the boot
    // tables), used by nothing else (not the kernel image, not a module), and from here
    // on owned by the allocator alone.
    let both = unsafe { core::slice::from_raw_parts_mut(at as *mut u64, (bytes / 8) as usize) };
    both.fill(0);
    let (bits, dirty) = both.split_at_mut(words as usize);
    let mut map = FrameBitmap { bits, dirty, dirty_count: 0, frames, free: 0, hint: 0 };
    for r in usable() {
        map.set_range(r.start, r.end(), true);
    }
    map.set_range(0, 0x10_0000, false);
    map.set_range(at, at + bytes, false);
    for &(s, e) in reserved {
        map.set_range(s, e, false);
    }
    *FRAMES.lock() = Some(map);
    Ok(())
}

fn with<R>(f: impl FnOnce(&mut FrameBitmap) -> R) -> Option<R> {
    FRAMES.lock().as_mut().map(f)
}

/// Frame numbers that were dirty when allocated, kept as runs (allocations are runs).
#[derive(Default)]
struct DirtyRuns {
    runs: [(u64, u64); 8],
    len: usize,
    overflow: bool,
}

impl DirtyRuns {
    fn push(&mut self, f: u64) {
        if self.len > 0 && self.runs[self.len - 1].1 == f {
            self.runs[self.len - 1].1 = f + 1;
        } else if self.len < self.runs.len() {
            self.runs[self.len] = (f, f + 1);
            self.len += 1;
        } else {
            self.overflow = true;
        }
    }
}

/// Allocates `count` frames aligned to `align` frames and zeroes those that were dirty
/// (all of the run if there were too many pieces to list), outside the lock.
fn alloc_clean(count: u64, align: u64) -> Option<u64> {
    let mut dirty = DirtyRuns::default();
    let f = with(|m| {
        let f = m.alloc_run(count, align)?;
        m.take_dirty(f, count, &mut dirty);
        Some(f)
    })
    .flatten()?;
    if dirty.overflow {
        zero(f * FRAME, count * FRAME);
    } else {
        for &(s, e) in &dirty.runs[..dirty.len] {
            zero(s * FRAME, (e - s) * FRAME);
        }
    }
    Some(f * FRAME)
}

/// One frame. Never holds a previous owner's data (dirty frames are zeroed first); not
/// otherwise zeroed.
pub fn alloc() -> Option<u64> {
    alloc_clean(1, 1)
}

/// One zero-filled frame.
pub fn alloc_zeroed() -> Option<u64> {
    let f = alloc()?;
    zero(f, FRAME);
    Some(f)
}

/// `count` contiguous frames starting at a multiple of `align` bytes. Never holding a
/// previous owner's data; not otherwise zeroed.
pub fn alloc_contiguous(count: u64, align: u64) -> Option<u64> {
    alloc_clean(count, (align / FRAME).max(1))
}

/// Gives one frame back.
pub fn free(frame: u64) {
    with(|m| m.set(frame / FRAME, true));
}

/// Gives `count` contiguous frames back.
pub fn free_contiguous(start: u64, count: u64) {
    with(|m| m.set_range(start, start + count * FRAME, true));
}

/// Gives `count` contiguous frames back without zeroing them: they are marked dirty, and
/// zeroed by [`scrub_dirty`] or by the allocation that hands them out next, whichever
/// comes first.
pub fn free_dirty(start: u64, count: u64) {
    with(|m| {
        let f = start / FRAME;
        for g in f..f + count {
            if g < m.frames && !m.is_free(g) {
                m.set_dirty(g, true);
                m.set(g, true);
            }
        }
    });
}

/// Makes the next allocations search from `addr` on (the allocator is next-fit): the
/// tests use it to put a new owner on frames just released dirty.
pub fn search_from(addr: u64) {
    with(|m| m.hint = (addr / FRAME).min(m.frames));
}

/// Free frames still holding a previous owner's data.
pub fn dirty_frames() -> u64 {
    with(|m| m.dirty_count).unwrap_or(0)
}

/// True if `frame` is free and not yet zeroed (for tests).
pub fn is_dirty(frame: u64) -> bool {
    with(|m| m.is_dirty(frame / FRAME)).unwrap_or(false)
}

/// Zeroes up to `max` dirty frames (the background scrub: idle time, or another CPU);
/// each run is taken out of the free pool while it is zeroed, so no allocation can see it
/// half done. Returns the frames zeroed.
pub fn scrub_dirty(max: u64) -> u64 {
    let mut done = 0;
    let mut from = 0;
    while done < max {
        // Claim one run of dirty free frames (at most 512: 2 MiB at a time).
        let run = with(|m| {
            if m.dirty_count == 0 {
                return None;
            }
            let mut f = from;
            while f < m.frames && !m.is_dirty(f) {
                if m.dirty[(f / 64) as usize] == 0 {
                    f = (f / 64 + 1) * 64;
                } else {
                    f += 1;
                }
            }
            if f >= m.frames {
                return None;
            }
            let mut e = f;
            while e < m.frames && e - f < 512.min(max - done) && m.is_dirty(e) {
                m.set_dirty(e, false);
                m.set(e, false);
                e += 1;
            }
            Some((f, e))
        })
        .flatten();
        let Some((f, e)) = run else { break };
        zero_nontemporal(f * FRAME, (e - f) * FRAME);
        with(|m| {
            for g in f..e {
                m.set(g, true);
            }
        });
        done += e - f;
        from = e;
    }
    done
}

/// The idle-time scrub: zeroes every dirty frame left (nothing else waits for the CPU)
/// and returns how many it zeroed and the TSC cycles it took.
pub fn scrub_idle() -> (u64, u64) {
    let t0 = crate::arch::tsc();
    let zeroed = scrub_dirty(u64::MAX);
    (zeroed, crate::arch::tsc().wrapping_sub(t0))
}

/// Frames currently free.
pub fn free_frames() -> u64 {
    with(|m| m.free).unwrap_or(0)
}

/// Zeroes `[addr, addr + len)` (whole frames) with non-temporal stores: the scrub's
/// frames are not about to be used, so they should not evict the caches of what is.
fn zero_nontemporal(addr: u64, len: u64) {
    let mut p = addr;
    while p < addr + len {
        // SAFETY: the caller claimed these frames (out of the free pool, owned by nobody
        // else) and RAM is identity-mapped; movnti writes one aligned 8-byte word.
        unsafe {
            core::arch::asm!("movnti [{p}], {z}", p = in(reg) p, z = in(reg) 0u64, options(nostack));
        }
        p += 8;
    }
    // SAFETY: a fence has no memory-safety preconditions; it orders the weakly ordered
    // non-temporal stores before the frames go back to the free pool.
    unsafe { core::arch::asm!("sfence", options(nostack)) };
}

/// Fills `[addr, addr + len)` with zeros.
pub fn zero(addr: u64, len: u64) {
    // SAFETY: callers pass frames they own (just allocated or being scrubbed); RAM is
    // identity-mapped.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, len as usize) };
}
