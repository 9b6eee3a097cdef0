//! ACPI DMAR (Intel VT-d) and IVRS (AMD-Vi) tables: zero-copy parsers, resolution of their
//! device references against the PCI topology, firmware sanity checks and boot-log summaries.
//!
//! Every parser works over a `&[u8]` holding the table as firmware supplied it, validates the
//! checksum and every length field up front, and reports malformed input as an
//! [`AcpiError`] naming the byte offset and the problem. No input can make it panic or read
//! out of bounds: all access goes through the checked [`bytes::Window`] helpers.

pub mod bytes;
pub mod dmar;
pub mod error;
pub mod header;
pub mod ivrs;
pub mod ivrs_entry;
pub mod pci;
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
