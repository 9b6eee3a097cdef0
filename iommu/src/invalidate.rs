//! The contract between the IOMMU core (which knows what was unmapped) and a hardware
//! driver (which knows how to make the IOMMU forget it).
//!
//! The core gathers unmapped ranges and turns them into naturally aligned power-of-two
//! blocks; a driver turns each block into one page-selective invalidation (VT-d IOTLB
//! descriptor with an address mask, AMD-Vi INVALIDATE_IOMMU_PAGES with the S bit).

use crate::error::HwError;

/// An IOMMU domain identifier (VT-d DID, AMD-Vi DomainID).
pub type DomainId = u16;

/// A naturally aligned block of IOVA space: `2^order` bytes starting at `iova`,
/// where `iova` is a multiple of `2^order` and `order >= 12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IovaBlock {
    /// First IOVA of the block.
    pub iova: u64,
    /// log2 of the block's size in bytes.
    pub order: u32,
}

impl IovaBlock {
    /// Size of the block in bytes.
    pub fn size(&self) -> u64 {
        1u64 << self.order
    }

    /// The smallest block that covers `[iova, iova + size)` (at least 4 KiB).
    pub fn covering(iova: u64, size: u64) -> Self {
        let last = iova.saturating_add(size.max(1) - 1);
        let order = (64 - (iova ^ last).leading_zeros()).clamp(12, 63);
        IovaBlock { iova: iova & !((1u64 << order) - 1), order }
    }
}

/// Implemented by each hardware driver: issue IOTLB invalidations and wait for them.
pub trait IotlbInvalidator {
    /// The largest block order one page-selective invalidation can name
    /// (VT-d: 12 + CAP.MAMV; AMD-Vi: effectively unbounded, 63).
    fn max_block_order(&self) -> u32;
    /// Queues a page-selective invalidation of `block` for `domain`.
    fn invalidate_block(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError>;
    /// Queues an invalidation of every translation cached for `domain`.
    fn invalidate_domain(&mut self, domain: DomainId) -> Result<(), HwError>;
    /// Returns once every invalidation queued so far has completed on the hardware.
    fn sync(&mut self) -> Result<(), HwError>;
    /// Called after `block` was mapped in `domain`: units that may cache not-present
    /// entries (VT-d CAP.CM) or buffer writes (CAP.RWBF) invalidate or flush and wait.
    /// The default does nothing, which is right for every other unit.
    fn after_map(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        let _ = (domain, block);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::IovaBlock;

    #[test]
    fn covering_block_is_the_smallest_aligned_one() {
        assert_eq!(IovaBlock::covering(0x3000, 0x1000), IovaBlock { iova: 0x3000, order: 12 });
        assert_eq!(IovaBlock::covering(0x3000, 0x2000), IovaBlock { iova: 0, order: 15 });
        assert_eq!(
            IovaBlock::covering(0x20_0000, 0x20_0000),
            IovaBlock { iova: 0x20_0000, order: 21 }
        );
        assert_eq!(IovaBlock::covering(0x1F_F000, 0x2000), IovaBlock { iova: 0, order: 22 });
    }
}
