//! Host pages waiting for the invalidation that covers them.
//!
//! The only way a page leaves a [`PendingRelease`] is [`PendingRelease::release_after`],
//! which runs the flush first and hands pages out only if it succeeded: an early release
//! cannot be written.

use alloc::vec::Vec;

use crate::error::HwError;
use crate::platform::PhysAddr;

/// A physically contiguous piece of host memory backing a DMA mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostExtent {
    /// First physical address (4 KiB aligned).
    pub paddr: PhysAddr,
    /// Length in bytes (a multiple of 4 KiB).
    pub len: u64,
}

/// Unmapped host pages that some IOTLB may still translate to.
#[derive(Debug, Default)]
pub struct PendingRelease {
    pages: Vec<HostExtent>,
    batches: Vec<Vec<HostExtent>>,
}

impl PendingRelease {
    /// Queues `extent` for release after the next successful flush.
    pub fn push(&mut self, extent: HostExtent) {
        match self.pages.last_mut() {
            Some(last) if last.paddr + last.len == extent.paddr => last.len += extent.len,
            _ => self.pages.push(extent),
        }
    }

    /// Queues a whole mapping's extents without copying them.
    pub fn push_batch(&mut self, extents: Vec<HostExtent>) {
        self.batches.push(extents);
    }

    /// Moves everything queued in `other` here.
    pub fn absorb(&mut self, other: &mut PendingRelease) {
        self.pages.append(&mut other.pages);
        self.batches.append(&mut other.batches);
    }

    /// Bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.pages.iter().chain(self.batches.iter().flatten()).map(|e| e.len).sum()
    }

    /// Runs `flush`; only if it succeeded, hands every queued page to `release`.
    /// On failure the pages stay queued (kept, never reused) and the error is returned.
    pub fn release_after(
        &mut self,
        flush: impl FnOnce() -> Result<(), HwError>,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<(), HwError> {
        flush()?;
        for page in self.pages.drain(..) {
            release(page);
        }
        for batch in self.batches.drain(..) {
            for page in batch {
                release(page);
            }
        }
        Ok(())
    }
}
