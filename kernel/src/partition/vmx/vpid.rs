//! VPID allocation: every live vCPU has its own VPID (1..=0xFFFF; 0 is the host's), so no
//! two guests ever share tagged TLB entries. A bitmap of the VPIDs in use: allocation
//! takes the next free one after the last handed out, so numbers are reused only after
//! wrapping past every free one, and never while their vCPU lives; a reused VPID still
//! has its earlier owner's TLB entries, so the vCPU flushes it (INVVPID) before its first
//! entry (`VmxVcpu::run`, `flush_vpid`).
#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// VPIDs 0..=0xFFFF, one bit each (VPID 0, the host's, is marked in use at the start of
/// every search instead of here, so the bitmap can be a zeroed static).
static IN_USE: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
/// Where the next search starts.
static NEXT: AtomicUsize = AtomicUsize::new(1);

/// A free VPID, now marked in use; `None` when all 65535 are taken.
pub fn allocate() -> Option<u16> {
    let start = NEXT.load(Ordering::Relaxed);
    for i in 0..0xFFFF {
        let vpid = (start - 1 + i) % 0xFFFF + 1;
        let (word, bit) = (vpid / 64, 1u64 << (vpid % 64));
        if IN_USE[word].fetch_or(bit, Ordering::SeqCst) & bit == 0 {
            NEXT.store(vpid % 0xFFFF + 1, Ordering::Relaxed);
            return Some(vpid as u16);
        }
    }
    None
}

/// Returns `vpid` (from [`allocate`]) once its vCPU is gone.
pub fn release(vpid: u16) {
    let vpid = usize::from(vpid);
    IN_USE[vpid / 64].fetch_and(!(1u64 << (vpid % 64)), Ordering::SeqCst);
}
