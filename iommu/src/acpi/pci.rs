//! PCI addressing and the small view of the PCI topology that resolution needs.

use core::fmt;

/// A PCI bus/device/function triple (the 16-bit "requester id" or AMD "device id").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl Bdf {
    /// A BDF, or `None` if the device or function number is out of range.
    pub fn new(bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(Bdf { bus, device, function })
    }

    /// Splits a 16-bit requester / device id.
    pub fn from_id(id: u16) -> Self {
        Bdf { bus: (id >> 8) as u8, device: ((id >> 3) & 0x1f) as u8, function: (id & 7) as u8 }
    }

    /// The 16-bit requester / device id.
    pub fn id(self) -> u16 {
        (u16::from(self.bus) << 8)
            | (u16::from(self.device & 0x1f) << 3)
            | u16::from(self.function & 7)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// An inclusive physical address range `[start, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive, so a range can end at `u64::MAX`).
    pub end: u64,
}

impl MemRange {
    /// Whether the two ranges share at least one byte.
    pub fn overlaps(&self, other: &MemRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains_range(&self, other: &MemRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

impl fmt::Display for MemRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end)
    }
}

/// What kind of bridge a [`PciBridge`] is; decides how it rewrites requester ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    /// PCIe root port or switch port: requester ids pass through unchanged.
    PciExpress,
    /// PCIe-to-PCI(-X) bridge: takes ownership as (secondary bus, 00.0).
    PcieToPci,
    /// Conventional PCI-to-PCI bridge: takes ownership with its own BDF.
    ConventionalPci,
}

/// PCI Express capability device/port type of a PCIe-to-PCI(-X) bridge.
pub const PCIE_TO_PCI_BRIDGE: u8 = 7;

impl BridgeKind {
    /// The kind of a bridge from its PCI Express device/port type (`None`: the bridge has
    /// no PCI Express capability, so it is a conventional PCI-to-PCI bridge).
    pub fn from_pcie_type(pcie_type: Option<u8>) -> Self {
        match pcie_type {
            Some(PCIE_TO_PCI_BRIDGE) => BridgeKind::PcieToPci,
            Some(_) => BridgeKind::PciExpress,
            None => BridgeKind::ConventionalPci,
        }
    }
}

/// One bridge found by PCI enumeration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciBridge {
    /// PCI segment (domain).
    pub segment: u16,
    /// The bridge's own address.
    pub bdf: Bdf,
    /// Secondary bus number (the bus directly behind it).
    pub secondary: u8,
    /// Subordinate bus number (highest bus behind it).
    pub subordinate: u8,
    /// Kind of bridge.
    pub kind: BridgeKind,
}

/// The PCI topology as enumeration found it: enough to follow DMAR paths and aliases.
pub trait PciTopology {
    /// The bridge at `bdf`, if that device exists and is a bridge.
    fn bridge_at(&self, segment: u16, bdf: Bdf) -> Option<PciBridge>;
    /// The bridge whose secondary bus is `bus` (the upstream bridge of devices on `bus`).
    fn bridge_above(&self, segment: u16, bus: u8) -> Option<PciBridge>;
}

impl PciTopology for [PciBridge] {
    fn bridge_at(&self, segment: u16, bdf: Bdf) -> Option<PciBridge> {
        self.iter().find(|b| b.segment == segment && b.bdf == bdf).copied()
    }

    fn bridge_above(&self, segment: u16, bus: u8) -> Option<PciBridge> {
        self.iter()
            .find(|b| b.segment == segment && b.secondary == bus && b.bdf.bus != bus)
            .copied()
    }
}

impl PciTopology for alloc::vec::Vec<PciBridge> {
    fn bridge_at(&self, segment: u16, bdf: Bdf) -> Option<PciBridge> {
        self.as_slice().bridge_at(segment, bdf)
    }

    fn bridge_above(&self, segment: u16, bus: u8) -> Option<PciBridge> {
        self.as_slice().bridge_above(segment, bus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_round_trips_through_its_id() {
        let b = Bdf::new(0x3a, 0x1f, 6).unwrap();
        assert_eq!(b.id(), 0x3afe);
        assert_eq!(Bdf::from_id(0x3afe), b);
        assert_eq!(b.to_string(), "3a:1f.6");
        assert!(Bdf::new(0, 32, 0).is_none());
        assert!(Bdf::new(0, 0, 8).is_none());
    }

    #[test]
    fn ranges_overlap_and_contain() {
        let a = MemRange { start: 0x1000, end: 0x1fff };
        let b = MemRange { start: 0x1fff, end: 0x2fff };
        let c = MemRange { start: 0x2000, end: 0x2fff };
        assert!(a.overlaps(&b));
        assert!(!a.overlaps(&c));
        assert!(MemRange { start: 0, end: u64::MAX }.contains_range(&c));
        assert!(!a.contains_range(&b));
    }
}
