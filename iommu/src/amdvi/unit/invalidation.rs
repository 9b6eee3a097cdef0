//! How the unit forgets translations: whole-unit flushes, per-domain and per-block
//! INVALIDATE_IOMMU_PAGES, and the core's [`IotlbInvalidator`] contract.

use alloc::collections::BTreeSet;

use crate::amdvi::command::{covering_block, Command};
use crate::error::HwError;
use crate::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use crate::platform::{FrameAllocator, Mmio, PhysMemory};

use super::AmdViUnit;

impl<R: Mmio, P: FrameAllocator + PhysMemory> AmdViUnit<R, P> {
    /// Drops everything the unit may cache, then waits: INVALIDATE_IOMMU_ALL when EFR.IA;
    /// otherwise INVALIDATE_DEVTAB_ENTRY for every device id, then INVALIDATE_IOMMU_PAGES
    /// for every domain the device table names or the driver attached since the last
    /// full flush. Other domain ids need nothing: attach invalidates a domain before any
    /// device can use it, so stale entries under an unused id are never hit.
    pub fn invalidate_all(&mut self) -> Result<(), HwError> {
        if self.efr.invalidate_all() {
            self.submit(Command::invalidate_all())?;
        } else {
            for devid in 0..self.device_table.entries() {
                self.submit(Command::invalidate_devtab_entry(devid as u16))?;
                self.stats.devtab_invalidations += 1;
                self.submit(Command::invalidate_interrupt_table(devid as u16))?;
                self.stats.interrupt_table_invalidations += 1;
            }
            let mut domains: BTreeSet<DomainId> = core::mem::take(&mut self.attached_since_flush);
            domains.extend(
                (0..self.device_table.entries())
                    .filter_map(|d| self.device_table.read(&self.mem, d as u16))
                    .filter(|e| e.is_translating())
                    .map(|e| e.domain()),
            );
            for domain in domains {
                self.submit_domain_invalidation(domain)?;
            }
        }
        self.completion_wait()
    }

    pub(super) fn submit_domain_invalidation(&mut self, domain: DomainId) -> Result<(), HwError> {
        self.stats.domain_invalidations += 1;
        self.submit(Command::invalidate_domain(domain))
    }
}

/// Before [`AmdViUnit::enable`] nothing can be cached (the unit has never been pointed at
/// these tables) and enable flushes every cache before translation goes on, so the
/// invalidator's operations succeed without a command then: firmware-reserved identity
/// domains are built and attached before enable.
impl<R: Mmio, P: FrameAllocator + PhysMemory> IotlbInvalidator for AmdViUnit<R, P> {
    fn max_block_order(&self) -> u32 {
        63
    }

    fn invalidate_block(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        if !self.enabled {
            return Ok(());
        }
        // An aligned block is encoded exactly; anything else is widened to cover it.
        let (base, order) = covering_block(block.iova, block.order);
        self.stats.page_invalidations += 1;
        self.submit(Command::invalidate_pages(domain, base, order))
    }

    fn invalidate_domain(&mut self, domain: DomainId) -> Result<(), HwError> {
        if !self.enabled {
            return Ok(());
        }
        self.submit_domain_invalidation(domain)
    }

    fn sync(&mut self) -> Result<(), HwError> {
        if !self.enabled {
            return Ok(());
        }
        self.completion_wait()
    }
}
