//! Resolution: from what the tables say (paths, ranges, aliases) to concrete devices, and
//! the question boot code asks: which unit translates this device, with which requester id.

pub mod dmar;
pub mod ivrs;

pub use dmar::{requester_id, resolve_scope, DmarUnit, DmarUnits, ResolvedScope, ScopeProblem};
#[cfg(test)]
mod tests;

pub use ivrs::{EntryProblem, IvrsDeviceRange, IvrsHidDevice, IvrsSpecial, IvrsUnit, IvrsUnits};

/// The answer to "who translates this device": the unit's index and the requester id
/// (VT-d source id / AMD-Vi device id) that the device's DMA carries when it reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Index of the unit: DRHD index in the DMAR, or IVHD index (among all IVHD blocks).
    pub unit: usize,
    /// The requester id the unit sees (and so the context / device table entry to use).
    pub requester_id: u16,
}
