//! Requester-id aliases and isolation groups: which requester ids a function's DMA may
//! carry when it reaches the IOMMU, and which functions the IOMMU cannot tell apart.
//!
//! An IOMMU isolates by requester id, so two functions are isolated from each other only
//! when their DMA carries distinct ids *and* nothing on the way lets one reach the other
//! without passing the IOMMU. The rules (the PCI Express and PCI-to-PCI bridge
//! specifications, as Linux's `pci_for_each_dma_alias` and `pci_device_group` apply them):
//!
//! - a PCIe-to-PCI(-X) bridge takes ownership of the transactions it forwards as
//!   (secondary bus, 00.0); a conventional PCI bridge with its own BDF; every such bridge
//!   on the path adds one id (which one reaches the IOMMU depends on the bridge, so each is
//!   programmed), and every function below it shares it;
//! - the firmware may name further aliases (IVRS alias entries), and some devices issue
//!   DMA with another function's id ([`DMA_ALIAS_QUIRKS`]);
//! - a PCIe root or switch downstream port forwards peer-to-peer traffic between the
//!   functions below it without the IOMMU seeing it unless Access Control Services (source
//!   validation, request and completion redirect, upstream forwarding) are enabled on it;
//!   a PCIe-to-PCI bridge has no ACS at all;
//! - the functions of a multi-function device may talk among themselves unless each has
//!   ACS.
//!
//! Functions that share an id, or that such a path joins, form one isolation group: a
//! group is the smallest unit that can be given to one owner.

use alloc::vec::Vec;
use core::fmt;

use super::pci::{Bdf, BridgeKind};

/// One PCI function as the grouping needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionFacts {
    /// PCI segment.
    pub segment: u16,
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor and device id (for the alias quirks).
    pub ids: (u16, u16),
    /// For bridges: secondary and subordinate bus, and how the bridge rewrites ids.
    pub bridge: Option<(u8, u8, BridgeKind)>,
    /// PCIe device/port type (capability 0x10), when the function is PCI Express.
    pub pcie_type: Option<u8>,
    /// ACS source validation, request and completion redirect and upstream forwarding are
    /// all enabled (for ports: the port isolates what is below it; for a function of a
    /// multi-function device: it is isolated from its siblings).
    pub acs: bool,
    /// The requester id the firmware tables say the IOMMU sees (route or IVRS alias).
    pub routed_id: Option<u16>,
}

/// PCIe root port.
const ROOT_PORT: u8 = 4;
/// PCIe switch upstream port.
const UPSTREAM_PORT: u8 = 5;
/// PCIe switch downstream port.
const DOWNSTREAM_PORT: u8 = 6;

/// Devices that issue DMA with another function number's requester id, as Linux's
/// `quirk_dma_func0_alias` / `quirk_dma_func1_alias` (drivers/pci/quirks.c) list them:
/// (vendor, device, function the DMA carries).
pub const DMA_ALIAS_QUIRKS: &[(u16, u16, u8)] = &[
    // Ricoh multi-function card readers: every function uses function 0.
    (0x1180, 0xe832, 0),
    (0x1180, 0xe476, 0),
    // Marvell SATA/IDE controllers: DMA (some of it) as function 1.
    (0x1b4b, 0x9120, 1),
    (0x1b4b, 0x9123, 1),
    (0x1b4b, 0x9128, 1),
    (0x1b4b, 0x9130, 1),
    (0x1b4b, 0x9170, 1),
    (0x1b4b, 0x9172, 1),
    (0x1b4b, 0x917a, 1),
    (0x1b4b, 0x9182, 1),
    (0x1b4b, 0x9183, 1),
    (0x1b4b, 0x91a0, 1),
    (0x1b4b, 0x9215, 1),
    (0x1b4b, 0x9220, 1),
    (0x1b4b, 0x9230, 1),
    (0x1b4b, 0x9235, 1),
    // HighPoint / TTI RocketRAID, JMicron JMB388: function 1.
    (0x1103, 0x0642, 1),
    (0x1103, 0x0645, 1),
    (0x197b, 0x2388, 1),
    (0x197b, 0x2392, 1),
];

/// PCIe-to-PCI bridges without a PCI Express capability (Linux's
/// `quirk_use_pcie_bridge_dma_alias`): they alias like PCIe-to-PCI bridges, as
/// (secondary bus, 00.0), not like the conventional bridges they look like.
pub const PCIE_BRIDGE_WITHOUT_CAPABILITY: &[(u16, u16)] = &[
    (0x1b21, 0x1080), // ASMedia ASM1083/1085
    (0x104c, 0x8240), // Texas Instruments XIO2000A
    (0x1283, 0x8892), // ITE 8892
    (0x1283, 0x8893), // ITE 8893
    (0x8086, 0x244e), // Intel 82801 PCI bridge
];

/// One isolation group: functions the IOMMU cannot keep apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationGroup {
    /// The group's number (its index in [`Isolation::groups`]).
    pub id: usize,
    /// PCI segment.
    pub segment: u16,
    /// Its functions, in enumeration order.
    pub members: Vec<Bdf>,
}

impl fmt::Display for IsolationGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "isolation group {} (", self.id)?;
        for (i, m) in self.members.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{:04x}:{m}", self.segment)?;
        }
        write!(f, ")")
    }
}

/// Every function's aliases and group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// Per function (in input order): the requester ids its DMA may carry, sorted.
    pub aliases: Vec<(u16, Bdf, Vec<u16>)>,
    /// The groups; every function is in exactly one.
    pub groups: Vec<IsolationGroup>,
    /// Per function (in input order): the index of its group.
    group_of: Vec<usize>,
}

impl Isolation {
    /// The requester ids `bdf`'s DMA may carry (empty for an unknown function).
    pub fn aliases_of(&self, segment: u16, bdf: Bdf) -> &[u16] {
        self.aliases
            .iter()
            .find(|(s, b, _)| *s == segment && *b == bdf)
            .map_or(&[], |(_, _, ids)| ids.as_slice())
    }

    /// `bdf`'s isolation group.
    pub fn group_of(&self, segment: u16, bdf: Bdf) -> Option<&IsolationGroup> {
        let i = self.aliases.iter().position(|(s, b, _)| *s == segment && *b == bdf)?;
        self.groups.get(*self.group_of.get(i)?)
    }
}

/// A tiny union-find over function indices.
struct Sets(Vec<usize>);

impl Sets {
    fn find(&mut self, mut i: usize) -> usize {
        // Bounded: each step moves to a strictly earlier-joined root (path halving).
        for _ in 0..self.0.len() {
            let parent = self.0[i];
            if parent == i {
                break;
            }
            self.0[i] = self.0[parent];
            i = parent;
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.0[hi] = lo;
        }
    }
}

/// How a bridge rewrites ids, with the capability-less PCIe-to-PCI bridges corrected.
fn bridge_kind(f: &FunctionFacts) -> Option<(u8, u8, BridgeKind)> {
    let (secondary, subordinate, kind) = f.bridge?;
    let kind =
        if kind == BridgeKind::ConventionalPci && PCIE_BRIDGE_WITHOUT_CAPABILITY.contains(&f.ids) {
            BridgeKind::PcieToPci
        } else {
            kind
        };
    Some((secondary, subordinate, kind))
}

/// Computes every function's requester-id aliases and the isolation groups.
pub fn isolate(functions: &[FunctionFacts]) -> Isolation {
    let n = functions.len();
    // The bridge directly above bus `bus` of `segment` (never the function itself).
    let above = |segment: u16, bus: u8| {
        functions.iter().position(|b| {
            b.segment == segment
                && b.bdf.bus != bus
                && bridge_kind(b).is_some_and(|(secondary, _, _)| secondary == bus)
        })
    };
    let mut sets = Sets((0..n).collect());
    let mut aliases = Vec::with_capacity(n);
    for (i, f) in functions.iter().enumerate() {
        let mut ids = alloc::vec![f.bdf.id()];
        ids.extend(f.routed_id);
        if let Some(&(_, _, func)) = DMA_ALIAS_QUIRKS.iter().find(|(v, d, _)| (*v, *d) == f.ids) {
            if let Some(alias) = Bdf::new(f.bdf.bus, f.bdf.device, func) {
                ids.push(alias.id());
            }
        }
        // Up the path: bridges that take ownership add their id; a port without ACS (and
        // every bridge that is not a PCIe port) joins the function to its group.
        let mut bus = f.bdf.bus;
        for _ in 0..256 {
            let Some(b) = above(f.segment, bus) else { break };
            let bridge = &functions[b];
            let Some((secondary, _, kind)) = bridge_kind(bridge) else { break };
            match kind {
                BridgeKind::PcieToPci => {
                    ids.push(Bdf { bus: secondary, device: 0, function: 0 }.id())
                }
                BridgeKind::ConventionalPci => ids.push(bridge.bdf.id()),
                BridgeKind::PciExpress => {}
            }
            let isolating_port = kind == BridgeKind::PciExpress
                && match bridge.pcie_type {
                    Some(ROOT_PORT | DOWNSTREAM_PORT) => bridge.acs,
                    // Upstream ports forward only to their downstream ports, which judge.
                    Some(UPSTREAM_PORT) => true,
                    _ => false,
                };
            if isolating_port {
                break;
            }
            sets.union(i, b);
            bus = bridge.bdf.bus;
        }
        ids.sort_unstable();
        ids.dedup();
        aliases.push((f.segment, f.bdf, ids));
    }
    for i in 0..n {
        for j in i + 1..n {
            let (fi, fj) = (&functions[i], &functions[j]);
            if fi.segment != fj.segment {
                continue;
            }
            // A shared requester id.
            let shared = aliases[i].2.iter().any(|id| aliases[j].2.binary_search(id).is_ok());
            // Functions of one device, not both isolated by ACS.
            let siblings = fi.bdf.bus == fj.bdf.bus
                && fi.bdf.device == fj.bdf.device
                && fi.bridge.is_none()
                && fj.bridge.is_none()
                && !(fi.acs && fj.acs);
            if shared || siblings {
                sets.union(i, j);
            }
        }
    }
    let mut groups: Vec<IsolationGroup> = Vec::new();
    let mut root_group: Vec<(usize, usize)> = Vec::new();
    let mut group_of = Vec::with_capacity(n);
    for (i, f) in functions.iter().enumerate() {
        let root = sets.find(i);
        let g = match root_group.iter().find(|(r, _)| *r == root) {
            Some(&(_, g)) => g,
            None => {
                let g = groups.len();
                groups.push(IsolationGroup { id: g, segment: f.segment, members: Vec::new() });
                root_group.push((root, g));
                g
            }
        };
        groups[g].members.push(f.bdf);
        group_of.push(g);
    }
    Isolation { aliases, groups, group_of }
}

#[cfg(test)]
mod tests;
