//! ACPI DMAR (Intel VT-d) and IVRS (AMD-Vi) tables: zero-copy parsers, resolution of their
//! device references against the PCI topology, firmware sanity checks and boot-log summaries.
//!
//! Every parser works over a `&[u8]` holding the table as firmware supplied it, validates the
//! checksum and every length field up front, and reports malformed input as an
//! [`AcpiError`] naming the byte offset and the problem. No input can make it panic or read
//! out of bounds: all access goes through the checked [`bytes::Window`] helpers.
//!
//! Boot uses them like this (IVRS is the same with `Ivrs`, `IvrsUnits`, `check_ivrs`):
//!
//! ```
//! use iommu::acpi::pci::{Bdf, MemRange, PciBridge};
//! use iommu::acpi::resolve::DmarUnits;
//! use iommu::acpi::sanity::{check_dmar, PlatformFacts};
//! use iommu::acpi::summary::dmar_summary;
//! use iommu::acpi::{AcpiError, Dmar};
//!
//! fn bring_up(table: &[u8], bridges: &[PciBridge], reserved: &[MemRange], ioapics: &[u8])
//!     -> Result<(), AcpiError> {
//!     let dmar = Dmar::parse(table)?;
//!     for line in dmar_summary(&dmar) {
//!         println!("{line}"); // the kernel logs these
//!     }
//!     let mut units = DmarUnits::new(&dmar, bridges);
//!     let facts = PlatformFacts { reserved: Some(reserved), ioapic_ids: Some(ioapics) };
//!     for warning in check_dmar(&dmar, &mut units, &facts).warnings {
//!         println!("{warning}"); // "[Firmware Bug]: ..."; unusable units are now skipped
//!     }
//!     if let Some(t) = units.translating_unit(bridges, 0, Bdf::from_id(0x0010)) {
//!         println!("00:02.0 -> DRHD {} as requester id {:#06x}", t.unit, t.requester_id);
//!     }
//!     Ok(())
//! }
//! ```

pub mod bytes;
pub mod dmar;
pub mod error;
pub mod groups;
pub mod header;
pub mod ivrs;
pub mod ivrs_entry;
pub mod pci;
pub mod reserved;
pub mod resolve;
pub mod sanity;
pub mod scope;
pub mod summary;
#[cfg(test)]
pub(crate) mod testutil;

pub use dmar::{Dmar, DmarStructure};
pub use error::{AcpiError, ErrorKind};
pub use header::SdtHeader;
pub use ivrs::{Ivrs, IvrsBlock};
pub use pci::{Bdf, BridgeKind, MemRange, PciBridge, PciTopology};
