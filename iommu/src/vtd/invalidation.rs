//! The two invalidation mechanisms: queued (128-bit descriptors in a ring in memory,
//! completion signalled by a wait descriptor's status write) and register based (CCMD and
//! the IOTLB/IVA register pair). A unit uses exactly one of them at a time: with QIE set,
//! register-based invalidations are ignored and their busy bits never clear.

use crate::error::HwError;
use crate::invalidate::DomainId;
use crate::platform::{poll_until, FrameAllocator, Mmio, PhysAddr, PhysMemory, POLL_LIMIT};
use crate::ring::{DescriptorRing, EntryVisibility};

use super::regs;
use crate::bits::field;

/// Which context-cache entries to invalidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextInvalidation {
    /// Every context entry the unit caches.
    Global,
    /// Entries tagged with one domain id.
    Domain(DomainId),
    /// The entry of one source id, tagged with `domain` (function mask 0).
    Device {
        /// Domain id the cached entry carries.
        domain: DomainId,
        /// Requester id (bus << 8 | devfn).
        source: u16,
    },
}

/// Which IOTLB entries to invalidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IotlbInvalidation {
    /// Every cached translation.
    Global,
    /// Every translation of one domain.
    Domain(DomainId),
    /// `2^mask` pages starting at `address` (aligned to that size) in one domain.
    Page {
        /// Domain id.
        domain: DomainId,
        /// First IOVA, aligned to `4 KiB << mask`.
        address: u64,
        /// Address mask (AM): log2 of the number of 4 KiB pages.
        mask: u32,
    },
}

/// Drain flags for IOTLB invalidations, set when the unit supports them (CAP.DRD/DWD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drain {
    /// Drain pending DMA reads before completing.
    pub reads: bool,
    /// Drain pending DMA writes before completing.
    pub writes: bool,
}

/// A 128-bit queued-invalidation descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Bits 63:0 (type in 3:0).
    pub lo: u64,
    /// Bits 127:64.
    pub hi: u64,
}

/// Descriptor type: context-cache invalidate.
pub const DESC_CONTEXT: u64 = 1;
/// Descriptor type: IOTLB invalidate.
pub const DESC_IOTLB: u64 = 2;
/// Descriptor type: invalidation wait.
pub const DESC_WAIT: u64 = 5;
/// Wait descriptor: status write (SW, bit 5).
pub const WAIT_SW: u64 = 1 << 5;
/// Wait descriptor: interrupt flag (IF, bit 4). Never combined with SW (QEMU 7.2 aborts).
pub const WAIT_IF: u64 = 1 << 4;

impl Descriptor {
    /// Context-cache invalidation: granularity in 5:4, DID 31:16, SID 47:32, FM 49:48 = 0.
    pub fn context(what: ContextInvalidation) -> Self {
        let lo = match what {
            ContextInvalidation::Global => 1 << 4,
            ContextInvalidation::Domain(did) => (2 << 4) | (u64::from(did) << 16),
            ContextInvalidation::Device { domain, source } => {
                (3 << 4) | (u64::from(domain) << 16) | (u64::from(source) << 32)
            }
        };
        Descriptor { lo: lo | DESC_CONTEXT, hi: 0 }
    }

    /// IOTLB invalidation: granularity 5:4, DW 6, DR 7, DID 31:16; hi = address | AM (5:0).
    pub fn iotlb(what: IotlbInvalidation, drain: Drain) -> Self {
        let mut lo = DESC_IOTLB;
        if drain.writes {
            lo |= 1 << 6;
        }
        if drain.reads {
            lo |= 1 << 7;
        }
        let (lo, hi) = match what {
            IotlbInvalidation::Global => (lo | (1 << 4), 0),
            IotlbInvalidation::Domain(did) => (lo | (2 << 4) | (u64::from(did) << 16), 0),
            IotlbInvalidation::Page { domain, address, mask } => (
                lo | (3 << 4) | (u64::from(domain) << 16),
                (address & !0xFFF) | u64::from(mask & 0x3F),
            ),
        };
        Descriptor { lo, hi }
    }

    /// Invalidation wait with a status write (SW only): when every earlier descriptor has
    /// completed, the unit writes the 32-bit `data` to `status_addr` (4-byte aligned).
    pub fn wait(status_addr: PhysAddr, data: u32) -> Self {
        Descriptor { lo: DESC_WAIT | WAIT_SW | (u64::from(data) << 32), hi: status_addr & !0x3 }
    }

    /// The descriptor type (bits 3:0).
    pub fn kind(&self) -> u64 {
        field(self.lo, 0, 4)
    }
}

/// Log2 of the queue's size in 4 KiB pages (IQA.QS): 0 = one page of 256 descriptors.
const QUEUE_SIZE_SHIFT: u64 = 0;
/// Log2 of the descriptors in the ring (256 per 4 KiB page).
const QUEUE_ENTRIES_LOG2: u32 = 8 + QUEUE_SIZE_SHIFT as u32;
/// IQH and IQT hold byte offsets of 128-bit descriptors: the index shifted by 4.
const QUEUE_POINTER_SHIFT: u32 = 4;

/// The invalidation queue: a [`DescriptorRing`] in one page, plus one status word the
/// wait descriptors write into.
///
/// Descriptors are written to memory as they are submitted, and the tail register (the
/// doorbell) is written once per batch: at [`wait`](Self::wait), or when the ring is full.
/// So a submitted descriptor starts executing no later than the next `wait`.
#[derive(Debug)]
pub struct InvalidationQueue {
    ring: DescriptorRing,
    status: PhysAddr,
    sequence: u32,
}

impl InvalidationQueue {
    /// Allocates the ring and the status page (both zeroed).
    pub fn new<P: FrameAllocator>(mem: &mut P) -> Result<Self, HwError> {
        let base = mem.alloc_zeroed_frame().ok_or(HwError::OutOfMemory)?;
        let Some(status) = mem.alloc_zeroed_frame() else {
            mem.free_frame(base);
            return Err(HwError::OutOfMemory);
        };
        let ring = DescriptorRing::new(base, QUEUE_ENTRIES_LOG2, EntryVisibility::Coherent);
        Ok(InvalidationQueue { ring, status, sequence: 0 })
    }

    /// Physical address of the ring.
    pub fn base(&self) -> PhysAddr {
        self.ring.base()
    }

    /// Programs IQA, resets the tail, sets QIE and waits for QIES (the unit must be idle
    /// with QIE clear). GCMD is built from GSTS masked of its one-shot bits.
    pub fn enable<R: Mmio>(&mut self, mmio: &mut R) -> Result<(), HwError> {
        // 128-bit descriptors (DW = 0), QS as above.
        mmio.write64(regs::IQA, self.ring.base() | QUEUE_SIZE_SHIFT);
        mmio.write64(regs::IQT, 0);
        self.ring.reset();
        let gcmd = (mmio.read32(regs::GSTS) & regs::GSTS_PERSISTENT_MASK) | regs::GCMD_QIE;
        mmio.write32(regs::GCMD, gcmd);
        poll(|| mmio.read32(regs::GSTS) & regs::GSTS_QIES != 0, "GSTS.QIES set")
    }

    /// Writes one descriptor at the tail. When the ring is full, first publishes what is
    /// pending and waits (bounded) for the unit to consume some of it.
    pub fn submit<R: Mmio, P: PhysMemory>(
        &mut self,
        mmio: &mut R,
        mem: &mut P,
        desc: Descriptor,
    ) -> Result<(), HwError> {
        if self.ring.is_full() {
            self.publish(mmio, mem)?;
            let ring = &mut self.ring;
            poll(
                || ring.observe_head(read_head(mmio)),
                "invalidation queue space (IQH to move past the tail)",
            )?;
        }
        self.ring.push(mem, [desc.lo, desc.hi])
    }

    /// Hands every submitted descriptor to the unit (writes IQT) and checks for an error.
    pub fn publish<R: Mmio, P: PhysMemory>(
        &mut self,
        mmio: &mut R,
        mem: &mut P,
    ) -> Result<(), HwError> {
        if let Some(tail) = self.ring.publish() {
            mmio.write64(regs::IQT, tail << QUEUE_POINTER_SHIFT);
        }
        self.check_error(mmio, mem)
    }

    /// Submits a wait descriptor with a status write, publishes, and polls memory until the
    /// status lands, which means every earlier descriptor has completed.
    pub fn wait<R: Mmio, P: PhysMemory>(
        &mut self,
        mmio: &mut R,
        mem: &mut P,
    ) -> Result<(), HwError> {
        self.sequence = self.sequence.wrapping_add(1);
        if self.sequence == 0 {
            self.sequence = 1;
        }
        let token = self.sequence;
        mem.write_u64(self.status, 0);
        self.submit(mmio, mem, Descriptor::wait(self.status, token))?;
        self.publish(mmio, mem)?;
        let mut error = None;
        let done = poll_until(POLL_LIMIT, || {
            if mem.read_u64(self.status) as u32 == token {
                return true;
            }
            error = self.check_error(mmio, mem).err();
            error.is_some()
        });
        if let Some(e) = error {
            return Err(e);
        }
        if !done {
            return Err(HwError::Timeout { what: "invalidation wait descriptor status write" });
        }
        self.ring.mark_consumed();
        Ok(())
    }

    /// Reports an invalidation-queue error. On IQE the unit stops at the rejected
    /// descriptor; it is overwritten with a harmless wait (status value 0 to a spare word,
    /// never a live token), IQE is cleared and IQT rewritten so the queue runs on.
    fn check_error<R: Mmio, P: PhysMemory>(
        &mut self,
        mmio: &mut R,
        mem: &mut P,
    ) -> Result<(), HwError> {
        let fsts = mmio.read32(regs::FSTS);
        if fsts & regs::FSTS_IQE != 0 {
            let filler = Descriptor::wait(self.status + 8, 0);
            self.ring.overwrite(mem, read_head(mmio), [filler.lo, filler.hi]);
            mmio.write32(regs::FSTS, regs::FSTS_IQE);
            mmio.write64(regs::IQT, self.ring.published() << QUEUE_POINTER_SHIFT);
            return Err(HwError::QueueError {
                what: "invalidation queue error (FSTS.IQE): a descriptor was rejected",
            });
        }
        if fsts & regs::FSTS_ITE != 0 {
            mmio.write32(regs::FSTS, regs::FSTS_ITE);
            return Err(HwError::QueueError { what: "invalidation time-out error (FSTS.ITE)" });
        }
        Ok(())
    }

    /// Frees the ring and status frames (call only with QIE clear).
    pub fn free<P: FrameAllocator>(self, mem: &mut P) {
        mem.free_frame(self.ring.base());
        mem.free_frame(self.status);
    }
}

/// The descriptor index in IQH (the ring reduces it modulo its size).
fn read_head<R: Mmio>(mmio: &R) -> u64 {
    mmio.read64(regs::IQH) >> QUEUE_POINTER_SHIFT
}

/// Register-based invalidation through CCMD and the IOTLB/IVA registers at ECAP.IRO.
#[derive(Debug, Clone, Copy)]
pub struct RegisterInvalidation {
    iva: usize,
}

impl RegisterInvalidation {
    /// Uses the IOTLB registers at `iotlb_offset` (ECAP.IRO * 16): IVA there, IOTLB at +8.
    pub fn new(iotlb_offset: usize) -> Self {
        RegisterInvalidation { iva: iotlb_offset }
    }

    /// Runs one context-cache invalidation and waits for CCMD.ICC to clear.
    pub fn context<R: Mmio>(&self, mmio: &mut R, what: ContextInvalidation) -> Result<(), HwError> {
        let value = match what {
            ContextInvalidation::Global => 1u64 << 61,
            ContextInvalidation::Domain(did) => (2u64 << 61) | u64::from(did),
            ContextInvalidation::Device { domain, source } => {
                (3u64 << 61) | (u64::from(source) << 16) | u64::from(domain)
            }
        };
        mmio.write64(regs::CCMD, regs::CCMD_ICC | value);
        poll(|| mmio.read64(regs::CCMD) & regs::CCMD_ICC == 0, "CCMD.ICC clear")?;
        if field(mmio.read64(regs::CCMD), 59, 2) == 0 {
            return Err(HwError::QueueError {
                what: "context-cache invalidation refused (CCMD.CAIG = 0)",
            });
        }
        Ok(())
    }

    /// Runs one IOTLB invalidation (IVA first for page-selective) and waits for IVT to clear.
    pub fn iotlb<R: Mmio>(
        &self,
        mmio: &mut R,
        what: IotlbInvalidation,
        drain: Drain,
    ) -> Result<(), HwError> {
        let mut value = regs::IOTLB_IVT;
        if drain.reads {
            value |= 1 << 49;
        }
        if drain.writes {
            value |= 1 << 48;
        }
        let value = match what {
            IotlbInvalidation::Global => value | (1 << 60),
            IotlbInvalidation::Domain(did) => value | (2 << 60) | (u64::from(did) << 32),
            IotlbInvalidation::Page { domain, address, mask } => {
                mmio.write64(self.iva, (address & !0xFFF) | u64::from(mask & 0x3F));
                value | (3 << 60) | (u64::from(domain) << 32)
            }
        };
        let reg = self.iva + 8;
        mmio.write64(reg, value);
        poll(|| mmio.read64(reg) & regs::IOTLB_IVT == 0, "IOTLB.IVT clear")?;
        if field(mmio.read64(reg), 57, 2) == 0 {
            return Err(HwError::QueueError {
                what: "IOTLB invalidation refused (IOTLB.IAIG = 0)",
            });
        }
        Ok(())
    }
}

/// Re-evaluates `done` up to [`POLL_LIMIT`] times; `what` names the awaited condition.
pub(crate) fn poll(done: impl FnMut() -> bool, what: &'static str) -> Result<(), HwError> {
    if poll_until(POLL_LIMIT, done) {
        Ok(())
    } else {
        Err(HwError::Timeout { what })
    }
}
