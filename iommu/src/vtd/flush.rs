//! The unit's invalidation entry points: context cache, IOTLB, write buffer, and the
//! core's [`IotlbInvalidator`] contract.

use crate::error::HwError;
use crate::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use crate::platform::{FrameAllocator, Mmio, PhysMemory};

use super::invalidation::{ContextInvalidation, Descriptor, Drain, IotlbInvalidation};
use super::regs;
use super::unit::VtdUnit;

impl<R: Mmio, P: FrameAllocator + PhysMemory> VtdUnit<R, P> {
    /// Drains the unit's internal write buffers to memory, on units that need it (CAP.RWBF).
    pub fn flush_write_buffer(&mut self) -> Result<(), HwError> {
        if !self.cap.rwbf() && !self.handoff_quirks.write_buffer_flush {
            return Ok(());
        }
        self.counts.write_buffer_flushes += 1;
        self.one_shot(regs::GCMD_WBF);
        self.wait_status(regs::GSTS_WBFS, false, "GSTS.WBFS clear (write buffer flush)")
    }

    fn drain(&self) -> Drain {
        Drain { reads: self.cap.read_drain(), writes: self.cap.write_drain() }
    }

    /// Invalidates context-cache entries. Queued mode: the descriptor is queued and runs by
    /// the next [`sync_invalidations`](Self::sync_invalidations). Register mode: CCMD, done on return.
    pub fn invalidate_context(&mut self, what: ContextInvalidation) -> Result<(), HwError> {
        self.counts.context += 1;
        match self.queue.as_mut() {
            Some(queue) if self.queue_on => {
                queue.submit(&mut self.mmio, &mut self.mem, Descriptor::context(what))
            }
            _ => {
                let result = self.registers.context(&mut self.mmio, what);
                self.count_error(result)
            }
        }
    }

    /// Invalidates IOTLB entries: queued (runs by the next sync) or through the IOTLB
    /// registers (done on return).
    /// A page-selective request the unit cannot express (CAP.PSI = 0, or a mask above
    /// CAP.MAMV) is widened to domain-selective.
    pub fn invalidate_iotlb(&mut self, what: IotlbInvalidation) -> Result<(), HwError> {
        let what = match what {
            IotlbInvalidation::Page { domain, mask, .. }
                if !self.cap.page_selective()
                    || mask > self.cap.max_address_mask()
                    || mask > 51 =>
            {
                IotlbInvalidation::Domain(domain)
            }
            IotlbInvalidation::Page { domain, address, mask } => IotlbInvalidation::Page {
                domain,
                address: address & !((4096u64 << mask) - 1),
                mask,
            },
            other => other,
        };
        match what {
            IotlbInvalidation::Global => self.counts.iotlb_global += 1,
            IotlbInvalidation::Domain(_) => self.counts.iotlb_domain += 1,
            IotlbInvalidation::Page { .. } => self.counts.iotlb_page += 1,
        }
        let drain = self.drain();
        match self.queue.as_mut() {
            Some(queue) if self.queue_on => {
                queue.submit(&mut self.mmio, &mut self.mem, Descriptor::iotlb(what, drain))
            }
            _ => {
                let result = self.registers.iotlb(&mut self.mmio, what, drain);
                self.count_error(result)
            }
        }
    }

    /// Waits until every invalidation issued so far has completed: in queued mode the
    /// batch is handed to the unit with a wait descriptor whose status write is polled in
    /// memory; in register mode there is nothing left to wait for.
    pub fn sync_invalidations(&mut self) -> Result<(), HwError> {
        match self.queue.as_mut() {
            Some(queue) if self.queue_on => {
                self.counts.waits += 1;
                let result = queue.wait(&mut self.mmio, &mut self.mem);
                self.count_error(result)
            }
            _ => Ok(()),
        }
    }

    /// Forgets everything: global context-cache and IOTLB invalidation, then sync.
    pub fn invalidate_all(&mut self) -> Result<(), HwError> {
        self.invalidate_context(ContextInvalidation::Global)?;
        self.invalidate_iotlb(IotlbInvalidation::Global)?;
        self.sync_invalidations()
    }

    /// Call after mapping `block` in `domain`: with CAP.CM the unit may have cached the
    /// not-present entry, so the block is invalidated; with CAP.RWBF the write buffer is
    /// flushed. Does nothing on other units.
    pub fn flush_after_map(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        // Before enable nothing is cached, and enable invalidates globally.
        if self.cap.caching_mode() && self.enabled {
            self.invalidate_block(domain, block)?;
            self.sync_invalidations()
        } else {
            self.flush_write_buffer()
        }
    }

    /// Counts queue and register invalidation errors in the fault counters.
    fn count_error(&mut self, result: Result<(), HwError>) -> Result<(), HwError> {
        if let Err(HwError::QueueError { .. }) = result {
            self.faults.queue_errors += 1;
        }
        result
    }
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> IotlbInvalidator for VtdUnit<R, P> {
    /// 12 + CAP.MAMV; 63 when the unit has no page-selective invalidation, since then every
    /// block becomes one domain-selective invalidation and bigger blocks mean fewer of them.
    fn max_block_order(&self) -> u32 {
        if self.cap.page_selective() {
            12 + self.cap.max_address_mask()
        } else {
            63
        }
    }

    fn invalidate_block(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        let mask = block.order.clamp(12, 63) - 12;
        self.invalidate_iotlb(IotlbInvalidation::Page { domain, address: block.iova, mask })
    }

    fn invalidate_domain(&mut self, domain: DomainId) -> Result<(), HwError> {
        self.invalidate_iotlb(IotlbInvalidation::Domain(domain))
    }

    fn sync(&mut self) -> Result<(), HwError> {
        self.sync_invalidations()
    }

    fn after_map(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        self.flush_after_map(domain, block)
    }
}
