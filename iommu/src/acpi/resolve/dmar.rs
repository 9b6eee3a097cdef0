//! DMAR resolution: device-scope paths to BDFs, and device to DRHD.

use alloc::vec::Vec;
use core::fmt;

use super::Translation;
use crate::acpi::dmar::Dmar;
use crate::acpi::pci::{Bdf, BridgeKind, PciTopology};
use crate::acpi::scope::{DeviceScope, ScopeKind};

/// A device scope resolved against the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedScope {
    /// Table offset of the scope entry.
    pub offset: usize,
    /// Scope type.
    pub kind: ScopeKind,
    /// Enumeration id (IOAPIC id, HPET number, ANDD number).
    pub enumeration_id: u8,
    /// The device the path ends at.
    pub bdf: Bdf,
    /// For a bridge scope whose bridge enumeration found: the buses behind it.
    pub buses: Option<(u8, u8)>,
}

impl ResolvedScope {
    /// Whether a PCI device at `bdf` is in this scope (itself, or behind a bridge scope).
    pub fn covers(&self, bdf: Bdf) -> bool {
        match self.kind {
            ScopeKind::Endpoint => self.bdf == bdf,
            ScopeKind::Bridge => {
                self.bdf == bdf || self.buses.is_some_and(|(lo, hi)| (lo..=hi).contains(&bdf.bus))
            }
            _ => false,
        }
    }
}

/// Why a device scope could not be resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeProblem {
    /// The scope has no path at all.
    EmptyPath {
        /// Table offset of the scope.
        offset: usize,
    },
    /// A hop names a device or function number out of range.
    BadHop {
        /// Table offset of the scope.
        offset: usize,
        /// The device number in the hop.
        device: u8,
        /// The function number in the hop.
        function: u8,
    },
    /// An intermediate hop is not a bridge that enumeration found.
    MissingBridge {
        /// Table offset of the scope.
        offset: usize,
        /// Where the path expected a bridge.
        at: Bdf,
    },
}

impl fmt::Display for ScopeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeProblem::EmptyPath { offset } => {
                write!(f, "device scope at {offset:#x} has an empty PCI path")
            }
            ScopeProblem::BadHop { offset, device, function } => write!(
                f,
                "device scope at {offset:#x} has an invalid hop {device:02x}.{function:x}"
            ),
            ScopeProblem::MissingBridge { offset, at } => write!(
                f,
                "device scope at {offset:#x} goes through {at}, which is not a known bridge"
            ),
        }
    }
}

/// Follows a scope's path from its start bus through the bridges enumeration found.
pub fn resolve_scope<T: PciTopology + ?Sized>(
    segment: u16,
    scope: &DeviceScope<'_>,
    topology: &T,
) -> Result<ResolvedScope, ScopeProblem> {
    let offset = scope.offset;
    let hops = scope.path.len();
    if hops == 0 {
        return Err(ScopeProblem::EmptyPath { offset });
    }
    let mut bus = scope.start_bus;
    let mut last = None;
    for (i, (device, function)) in scope.path.hops().enumerate() {
        let bdf = Bdf::new(bus, device, function).ok_or(ScopeProblem::BadHop {
            offset,
            device,
            function,
        })?;
        if i + 1 < hops {
            let bridge = topology
                .bridge_at(segment, bdf)
                .ok_or(ScopeProblem::MissingBridge { offset, at: bdf })?;
            bus = bridge.secondary;
        }
        last = Some(bdf);
    }
    let bdf = last.ok_or(ScopeProblem::EmptyPath { offset })?;
    let buses = match scope.kind {
        ScopeKind::Bridge => {
            topology.bridge_at(segment, bdf).map(|b| (b.secondary, b.subordinate.max(b.secondary)))
        }
        _ => None,
    };
    Ok(ResolvedScope { offset, kind: scope.kind, enumeration_id: scope.enumeration_id, bdf, buses })
}

/// The requester id a device's DMA carries at the root complex (VT-d rules, as Linux's
/// DMA-alias walk): PCIe-to-PCI bridges substitute (secondary bus, 00.0), conventional
/// PCI bridges their own BDF; the topmost substitution wins. Bounded against loops.
pub fn requester_id<T: PciTopology + ?Sized>(topology: &T, segment: u16, bdf: Bdf) -> Bdf {
    let mut rid = bdf;
    let mut bus = bdf.bus;
    for _ in 0..256 {
        let Some(bridge) = topology.bridge_above(segment, bus) else {
            break;
        };
        match bridge.kind {
            BridgeKind::PciExpress => {}
            BridgeKind::PcieToPci => rid = Bdf { bus: bridge.secondary, device: 0, function: 0 },
            BridgeKind::ConventionalPci => rid = bridge.bdf,
        }
        bus = bridge.bdf.bus;
    }
    rid
}

/// One DRHD with its scopes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarUnit {
    /// Index among the table's DRHDs.
    pub index: usize,
    /// Table offset of the DRHD.
    pub offset: usize,
    /// Register base.
    pub base: u64,
    /// Register set size in bytes.
    pub register_size: u64,
    /// PCI segment.
    pub segment: u16,
    /// INCLUDE_PCI_ALL flag.
    pub include_pci_all: bool,
    /// Scopes that resolved.
    pub scopes: Vec<ResolvedScope>,
    /// Scopes that did not (the devices may simply be absent).
    pub unresolved: Vec<ScopeProblem>,
    /// False once a sanity check found the unit unusable.
    pub usable: bool,
}

/// Every DRHD of a DMAR, resolved; answers which unit translates a device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DmarUnits {
    /// The units in table order.
    pub units: Vec<DmarUnit>,
}

impl DmarUnits {
    /// Resolves every DRHD's scopes against the topology.
    pub fn new<T: PciTopology + ?Sized>(dmar: &Dmar<'_>, topology: &T) -> Self {
        let units = dmar
            .drhds()
            .enumerate()
            .map(|(index, d)| {
                let mut scopes = Vec::new();
                let mut unresolved = Vec::new();
                for s in d.scopes.clone() {
                    match resolve_scope(d.segment, &s, topology) {
                        Ok(r) => scopes.push(r),
                        Err(p) => unresolved.push(p),
                    }
                }
                DmarUnit {
                    index,
                    offset: d.offset,
                    base: d.base,
                    register_size: d.register_size(),
                    segment: d.segment,
                    include_pci_all: d.include_pci_all(),
                    scopes,
                    unresolved,
                    usable: true,
                }
            })
            .collect();
        DmarUnits { units }
    }

    /// The unit that translates PCI device `bdf`: the one whose scope names it (or a
    /// bridge above it), else the segment's INCLUDE_PCI_ALL unit; with its requester id.
    ///
    /// `None` when that unit, or any DRHD listing the device, is unusable: a device a DRHD
    /// lists is translated by that DRHD only (the hardware never hands its DMA to the
    /// INCLUDE_PCI_ALL unit), so with its unit disabled nothing confines it and it must
    /// never be assigned.
    pub fn translating_unit<T: PciTopology + ?Sized>(
        &self,
        topology: &T,
        segment: u16,
        bdf: Bdf,
    ) -> Option<Translation> {
        let in_segment = || self.units.iter().filter(|u| u.segment == segment);
        let mut listing = in_segment().filter(|u| u.scopes.iter().any(|s| s.covers(bdf)));
        // Two DRHDs listing one device is a firmware bug: a disabled one among them may be
        // the one on its path, so it is enough to refuse.
        if listing.clone().any(|u| !u.usable) {
            return None;
        }
        let unit = listing.next().or_else(|| in_segment().find(|u| u.include_pci_all))?;
        if !unit.usable {
            return None;
        }
        Some(Translation {
            unit: unit.index,
            requester_id: requester_id(topology, segment, bdf).id(),
        })
    }

    /// The unit whose scope lists I/O APIC `id` (for interrupt remapping); `None` when
    /// that unit is unusable (no other unit remaps its interrupts).
    pub fn ioapic_unit(&self, id: u8) -> Option<(usize, Bdf)> {
        let (unit, bdf) = self.units.iter().find_map(|u| {
            u.scopes
                .iter()
                .find(|s| s.kind == ScopeKind::IoApic && s.enumeration_id == id)
                .map(|s| (u, s.bdf))
        })?;
        unit.usable.then_some((unit.index, bdf))
    }
}
