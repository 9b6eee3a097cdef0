//! Why a partition's DMA space could not be set up, extended or torn down: each variant
//! carries the error of the layer below (tracker, page tables, unit), so the message
//! printed names both what the partition was doing and what refused it.
#![deny(unsafe_code)]

use crate::iommu::DomainIdError;
use crate::pci::Bdf;
use alloc::string::String;
use core::fmt;
use iommu::error::HwError;
use iommu::invalidate::DomainId;
use iommu::pgtable::MapError;
use iommu::tracker::TrackerError;

/// Why a partition DMA operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmaError {
    /// The machine has no IOMMU: a device's DMA could not be confined.
    NoIommu,
    /// The partition's DMA space was made for the other vendor's IOMMU.
    VendorMismatch,
    /// No hypervisor memory for the fgsp probe's page pair.
    NoProbeMemory,
    /// Mapping guest memory into the DMA space failed.
    MapMemory(TrackerError),
    /// A route or an assigned device names a unit that was not brought up.
    NoSuchUnit {
        /// The unit named.
        unit: usize,
        /// How many units there are.
        units: usize,
    },
    /// The unit could not say which page-table format its domains use.
    DomainFormat(HwError),
    /// No domain id was free.
    DomainId(DomainIdError),
    /// A new domain's top-level table could not be made.
    NewDomain(MapError),
    /// The tracker refused to attach the new domain (fill or fgsp probe).
    AttachDomain {
        /// The domain's id.
        id: DomainId,
        /// What the tracker said.
        error: TrackerError,
    },
    /// A caching-mode unit failed the invalidation after the domain's mappings.
    AfterMap(HwError),
    /// Pointing a requester id at the domain failed (those done before were blocked again).
    AttachDevice {
        /// The requester id.
        rid: u16,
        /// What the unit said.
        error: HwError,
    },
    /// Blocking a device at teardown failed.
    Block {
        /// The device.
        device: Bdf,
        /// The requester id being blocked.
        rid: u16,
        /// What the unit said.
        error: HwError,
    },
    /// The tracker's teardown failed; pages it could not prove unmapped stay quarantined.
    Teardown(TrackerError),
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::NoIommu => f.write_str("no IOMMU: device DMA could not be confined"),
            DmaError::VendorMismatch => {
                f.write_str("the partition's DMA space does not match the machine's IOMMU")
            }
            DmaError::NoProbeMemory => f.write_str("no memory for the fgsp probe's page pair"),
            DmaError::MapMemory(e) => write!(f, "mapping guest memory for DMA: {e}"),
            DmaError::NoSuchUnit { unit, units } => {
                write!(f, "IOMMU unit {unit} does not exist (the machine has {units})")
            }
            DmaError::DomainFormat(e) => write!(f, "the unit's domain format: {e}"),
            DmaError::DomainId(e) => write!(f, "{e}"),
            DmaError::NewDomain(e) => write!(f, "new domain: {e}"),
            DmaError::AttachDomain { id, error } => write!(f, "attaching domain {id}: {error}"),
            DmaError::AfterMap(e) => write!(f, "invalidating after the domain's mappings: {e}"),
            DmaError::AttachDevice { rid, error } => {
                write!(f, "attaching requester id {rid:#06x}: {error}")
            }
            DmaError::Block { device, rid, error } => {
                write!(f, "blocking {device} (requester id {rid:#06x}): {error}")
            }
            DmaError::Teardown(e) => write!(f, "DMA teardown: {e}"),
        }
    }
}

impl From<DomainIdError> for DmaError {
    fn from(e: DomainIdError) -> Self {
        DmaError::DomainId(e)
    }
}

/// The in-kernel tests report failures as text: the error becomes its words there.
impl From<DmaError> for String {
    fn from(e: DmaError) -> String {
        alloc::string::ToString::to_string(&e)
    }
}
