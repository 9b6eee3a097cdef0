//! What every remapping unit offers the rest of the hypervisor, whatever its vendor:
//! a page-table format for its domains, device attach and block, and invalidation.
//!
//! The DMA tracker, the partition code and the DMA-proof test suites are written once
//! against this trait; only the two implementations below know VT-d from AMD-Vi.

use crate::amdvi::AmdViUnit;
use crate::domain::Domain;
use crate::error::HwError;
use crate::invalidate::IotlbInvalidator;
use crate::pgtable::amdv1::AmdV1Format;
use crate::pgtable::vtd::VtdFormat;
use crate::pgtable::PteFormat;
use crate::platform::{FrameAllocator, Mmio, PhysMemory};
use crate::vtd::VtdUnit;
use alloc::string::String;
use alloc::vec::Vec;

/// A remapping unit (one DRHD or IVHD) the hypervisor drives.
pub trait RemappingUnit: IotlbInvalidator {
    /// The page-table format of this unit's domains.
    type Format: PteFormat;

    /// "VT-d" or "AMD-Vi", for logs.
    fn kind(&self) -> &'static str;
    /// The format a new domain on this unit must use (depth and page sizes); an error
    /// when the unit reports a depth the format cannot build.
    fn domain_format(&self) -> Result<Self::Format, HwError>;
    /// Points device `rid` at `domain`'s tables and invalidates whatever the unit cached
    /// for the device before.
    fn attach_device(&mut self, rid: u16, domain: &Domain<Self::Format>) -> Result<(), HwError>;
    /// Makes device `rid` reach nothing (VT-d: no context entry; AMD-Vi: a blocking DTE)
    /// and invalidates what the unit cached for it.
    fn block_device(&mut self, rid: u16) -> Result<(), HwError>;
    /// Drops every cached translation of every domain, and waits.
    fn invalidate_everything(&mut self) -> Result<(), HwError>;
    /// Invalidation commands or descriptors issued so far (for logs and benchmarks).
    fn invalidations_issued(&self) -> u64;
    /// The unit's capabilities in words, one item per line.
    fn describe(&self) -> Vec<String>;
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> RemappingUnit for VtdUnit<R, P> {
    type Format = VtdFormat;

    fn kind(&self) -> &'static str {
        "VT-d"
    }

    fn domain_format(&self) -> Result<VtdFormat, HwError> {
        VtdUnit::domain_format(self)
    }

    fn attach_device(&mut self, rid: u16, domain: &Domain<VtdFormat>) -> Result<(), HwError> {
        VtdUnit::attach_device(self, rid, domain.id(), domain.root(), domain.levels())
    }

    fn block_device(&mut self, rid: u16) -> Result<(), HwError> {
        self.detach_device(rid).map(|_| ())
    }

    fn invalidate_everything(&mut self) -> Result<(), HwError> {
        self.invalidate_all()
    }

    fn invalidations_issued(&self) -> u64 {
        let c = self.invalidation_counts();
        c.context + c.iotlb_global + c.iotlb_domain + c.iotlb_page
    }

    fn describe(&self) -> Vec<String> {
        VtdUnit::describe(self)
    }
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> RemappingUnit for AmdViUnit<R, P> {
    type Format = AmdV1Format;

    fn kind(&self) -> &'static str {
        "AMD-Vi"
    }

    fn domain_format(&self) -> Result<AmdV1Format, HwError> {
        AmdV1Format::new(self.levels()).ok_or(UNSUPPORTED_DEPTH)
    }

    fn attach_device(&mut self, rid: u16, domain: &Domain<AmdV1Format>) -> Result<(), HwError> {
        AmdViUnit::attach_device(self, rid, domain.id(), domain.root(), domain.levels())
    }

    fn block_device(&mut self, rid: u16) -> Result<(), HwError> {
        AmdViUnit::block_device(self, rid)
    }

    fn invalidate_everything(&mut self) -> Result<(), HwError> {
        self.invalidate_all()
    }

    fn invalidations_issued(&self) -> u64 {
        // Every command but COMPLETION_WAIT invalidates something (pages, domains, device
        // table entries, or everything).
        let s = self.stats();
        s.commands - s.completion_waits
    }

    fn describe(&self) -> Vec<String> {
        AmdViUnit::describe(self)
    }
}

const UNSUPPORTED_DEPTH: HwError = HwError::Unsupported { what: "page-table depth" };
