//! Guest memory: host frames carved from the frame allocator, either 4 KiB frames one by
//! one or 2 MiB-aligned runs of 512, and the guest-physical -> host-physical lookup.
//! Frames go back either scrubbed (zeroed now, for memory kept for re-creation) or dirty
//! (`release_dirty`: the frame allocator zeroes them before anyone else gets them, so a
//! destroy does not wait for the scrub).

use crate::mem::frames;
use alloc::vec::Vec;
use boot::partition_config::Backing;

const FRAME: u64 = 4096;

/// A partition's RAM: guest-physical `[0, size)`, backed chunk by chunk.
pub struct GuestMemory {
    backing: Backing,
    /// Host-physical base of each backing page, in guest-physical order.
    chunks: Vec<u64>,
}

impl GuestMemory {
    /// Carves `size` bytes (a multiple of the backing page) from host RAM, zeroed.
    /// All or nothing: on failure every frame taken so far goes back.
    pub fn allocate(size: u64, backing: Backing) -> Option<GuestMemory> {
        let page = backing.page_size();
        if size == 0 || !size.is_multiple_of(page) {
            return None;
        }
        let count = size / page;
        let mut mem = GuestMemory { backing, chunks: Vec::new() };
        mem.chunks.try_reserve_exact(count as usize).ok()?;
        for _ in 0..count {
            let chunk = match backing {
                Backing::Pages4K => frames::alloc(),
                Backing::Pages2M => frames::alloc_contiguous(page / FRAME, page),
            };
            match chunk {
                Some(c) => {
                    frames::zero(c, page);
                    mem.chunks.push(c);
                }
                None => {
                    mem.release();
                    return None;
                }
            }
        }
        Some(mem)
    }

    /// Guest RAM size in bytes.
    pub fn size(&self) -> u64 {
        self.chunks.len() as u64 * self.backing.page_size()
    }

    /// The backing page size.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Host-physical bases of the backing pages, in guest-physical order.
    pub fn chunks(&self) -> &[u64] {
        &self.chunks
    }

    /// Guest RAM as maximal physically contiguous runs `(gpa, hpa, len)`, in guest order:
    /// what an IOMMU mapping (and its chunked unmap) of the whole partition walks.
    pub fn contiguous_runs(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let page = self.backing.page_size();
        let mut i = 0;
        core::iter::from_fn(move || {
            let first = *self.chunks.get(i)?;
            let start = i;
            i += 1;
            while self.chunks.get(i) == Some(&(first + (i - start) as u64 * page)) {
                i += 1;
            }
            Some((start as u64 * page, first, (i - start) as u64 * page))
        })
    }

    /// The contiguous runs as the DMA tracker's host extents, in guest order.
    pub fn host_extents(&self) -> Vec<iommu::tracker::HostExtent> {
        self.contiguous_runs()
            .map(|(_, paddr, len)| iommu::tracker::HostExtent { paddr, len })
            .collect()
    }

    /// Forgets every frame without touching it: after the DMA tracker's release callback
    /// scrubbed and returned them itself, or to leak frames a device might still write.
    pub fn disown(&mut self) {
        self.chunks.clear();
    }

    /// The host-physical address behind guest-physical `gpa`, if it is guest RAM.
    pub fn host_address(&self, gpa: u64) -> Option<u64> {
        let page = self.backing.page_size();
        let chunk = self.chunks.get(usize::try_from(gpa / page).ok()?)?;
        Some(chunk + gpa % page)
    }

    /// Copies `bytes` into guest RAM at `gpa`; false (and nothing written past the end)
    /// when the range is not all guest RAM.
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        let Some(end) = gpa.checked_add(bytes.len() as u64) else { return false };
        if end > self.size() {
            return false;
        }
        let mut done = 0usize;
        while done < bytes.len() {
            let at = gpa + done as u64;
            let room = (FRAME - at % FRAME) as usize;
            let n = room.min(bytes.len() - done);
            let Some(host) = self.host_address(at) else { return false };
            // SAFETY: `host..host + n` lies in one frame this partition owns (checked
            // against its size above), identity-mapped; the guest is not running.
            unsafe { core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), host as *mut u8, n) };
            done += n;
        }
        true
    }

    /// Copies up to `out.len()` bytes from guest RAM at `gpa`; returns how many were RAM.
    /// `gpa` is guest-controlled (a hypercall argument): an address past `u64::MAX`
    /// ends the copy like any other non-RAM byte.
    pub fn read(&self, gpa: u64, out: &mut [u8]) -> usize {
        for (i, b) in out.iter_mut().enumerate() {
            match gpa.checked_add(i as u64).and_then(|a| self.host_address(a)) {
                // SAFETY: a byte of a frame this partition owns, identity-mapped.
                Some(h) => *b = unsafe { core::ptr::read_volatile(h as *const u8) },
                None => return i,
            }
        }
        out.len()
    }

    /// Zeroes every byte: what the next owner of these frames may see.
    pub fn scrub(&mut self) {
        let page = self.backing.page_size();
        for &c in &self.chunks {
            frames::zero(c, page);
        }
    }

    /// Gives every frame back to the allocator unscrubbed, marked dirty: zeroed in the
    /// background or by the allocation that hands it out next, never seen by a new owner.
    pub fn release_dirty(&mut self) {
        let page = self.backing.page_size();
        for c in self.chunks.drain(..) {
            frames::free_dirty(c, page / FRAME);
        }
    }

    /// Gives every frame back to the allocator (callers scrub first).
    pub fn release(&mut self) {
        let page = self.backing.page_size();
        for c in self.chunks.drain(..) {
            frames::free_contiguous(c, page / FRAME);
        }
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // Memory dropped without going through a partition's teardown still must not
        // leak its contents: back as dirty frames, zeroed before any reuse.
        if !self.chunks.is_empty() {
            self.release_dirty();
        }
    }
}
