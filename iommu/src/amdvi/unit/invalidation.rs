//! How the unit forgets translations: whole-unit flushes, per-domain and per-block
//! INVALIDATE_IOMMU_PAGES, and the core's [`IotlbInvalidator`] contract.

use alloc::vec::Vec;

use crate::amdvi::command::{covering_block, Command};
use crate::error::HwError;
use crate::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use crate::platform::{FrameAllocator, Mmio, PhysMemory};

use super::AmdViUnit;

impl<R: Mmio, P: FrameAllocator + PhysMemory> AmdViUnit<R, P> {
    /// Drops every cached translation: INVALIDATE_IOMMU_ALL when EFR.IA, otherwise every
    /// domain in use by the device table; then waits.
    pub fn invalidate_all(&mut self) -> Result<(), HwError> {
        if self.efr.invalidate_all() {
            self.submit(Command::invalidate_all())?;
        } else {
            let mut domains: Vec<DomainId> = (0..self.device_table.entries())
                .filter_map(|d| self.device_table.read(&self.mem, d as u16))
                .filter(|e| e.is_translating())
                .map(|e| e.domain())
                .collect();
            domains.sort_unstable();
            domains.dedup();
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

    pub(super) fn flush_everything(&mut self) -> Result<(), HwError> {
        if self.efr.invalidate_all() {
            self.submit(Command::invalidate_all())?;
        } else {
            for devid in 0..self.device_table.entries() {
                self.submit(Command::invalidate_devtab_entry(devid as u16))?;
            }
            for domain in 0..=DomainId::MAX {
                self.submit(Command::invalidate_domain(domain))?;
            }
        }
        self.completion_wait()
    }
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> IotlbInvalidator for AmdViUnit<R, P> {
    fn max_block_order(&self) -> u32 {
        63
    }

    fn invalidate_block(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        // An aligned block is encoded exactly; anything else is widened to cover it.
        let (base, order) = covering_block(block.iova, block.order);
        self.stats.page_invalidations += 1;
        self.submit(Command::invalidate_pages(domain, base, order))
    }

    fn invalidate_domain(&mut self, domain: DomainId) -> Result<(), HwError> {
        self.submit_domain_invalidation(domain)
    }

    fn sync(&mut self) -> Result<(), HwError> {
        self.completion_wait()
    }
}
