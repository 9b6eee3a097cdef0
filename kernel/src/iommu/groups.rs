//! Isolation groups on this machine: ACS enabled on every port and function that has it,
//! then every function's requester-id aliases and group computed by
//! [`iommu::acpi::groups::isolate`] from the enumerated topology and the routes.
#![deny(unsafe_code)]

use super::Route;
use crate::pci::{Bdf, ConfigSpace, PciFunction};
use alloc::vec::Vec;
use iommu::acpi::groups::{isolate, FunctionFacts, Isolation};
use iommu::acpi::pci::{Bdf as AcpiBdf, BridgeKind};
use iommu::bits::Field;

/// PCIe extended capability id of Access Control Services.
const ACS_CAP_ID: u32 = 0x000D;
/// Extended capability header: id (bits 15:0) and next offset (bits 31:20).
const EXT_ID: Field = Field::new(0, 16);
const EXT_NEXT: Field = Field::new(20, 12);
/// The ACS dword at +4: capability (15:0) and control (31:16) registers.
const ACS_CAPABILITY: Field = Field::new(0, 16);
const ACS_CONTROL: Field = Field::new(16, 16);
/// ACS source validation.
const ACS_SV: Field = Field::bit(0);
/// ACS P2P request redirect.
const ACS_RR: Field = Field::bit(2);
/// ACS P2P completion redirect.
const ACS_CR: Field = Field::bit(3);
/// ACS upstream forwarding.
const ACS_UF: Field = Field::bit(4);
/// What isolates functions behind a port (Linux's REQ_ACS_FLAGS), in the capability and
/// control registers alike.
const ACS_ISOLATION: u64 = ACS_SV.mask() | ACS_RR.mask() | ACS_CR.mask() | ACS_UF.mask();

/// The ACS capability's offset in extended configuration space, if the function has one
/// (the list is followed with a bound: a looping list is a device fault).
fn acs_offset(cfg: ConfigSpace) -> Option<u16> {
    let mut at: u16 = 0x100;
    for _ in 0..64 {
        let header = u64::from(cfg.read32(at));
        if header == 0 || header == 0xFFFF_FFFF {
            return None;
        }
        if EXT_ID.get(header) == u64::from(ACS_CAP_ID) {
            return Some(at);
        }
        let next = EXT_NEXT.get(header) as u16;
        if next < 0x100 || next <= at {
            return None;
        }
        at = next & !3;
    }
    None
}

/// Enables source validation, request and completion redirect and upstream forwarding
/// on `f` where its ACS capability has them; true when, afterwards, all four are on or
/// hard-wired (a feature the capability lacks is architecturally not needed, as Linux's
/// `pci_acs_flags_enabled` reads it). False without an ACS capability.
pub fn enable_acs(f: &PciFunction) -> bool {
    if f.pcie_type.is_none() {
        return false;
    }
    let cfg = f.config();
    let Some(at) = acs_offset(cfg) else { return false };
    let dword = u64::from(cfg.read32(at + 4));
    let capability = ACS_CAPABILITY.get(dword);
    let wanted = ACS_ISOLATION & capability;
    let control = ACS_CONTROL.get(dword) | wanted;
    cfg.write16(at + 6, control as u16);
    let now = ACS_CONTROL.get(u64::from(cfg.read32(at + 4)));
    now & wanted == wanted
}

/// Enables ACS everywhere it exists and computes every function's aliases and group.
pub fn compute(pci: &[PciFunction], routes: &[(Bdf, Route)]) -> Isolation {
    let facts: Vec<FunctionFacts> = pci
        .iter()
        .map(|f| {
            let acs = enable_acs(f);
            let bridge = f.bridge.map(|(secondary, subordinate)| {
                (secondary, subordinate, BridgeKind::from_pcie_type(f.pcie_type))
            });
            FunctionFacts {
                segment: f.bdf.segment,
                bdf: AcpiBdf::from_id(f.bdf.requester_id()),
                ids: (f.vendor, f.device),
                bridge,
                pcie_type: f.pcie_type,
                acs,
                routed_id: routes.iter().find(|(b, _)| *b == f.bdf).map(|(_, r)| r.requester_id),
            }
        })
        .collect();
    let iso = isolate(&facts);
    let with_acs = facts.iter().filter(|f| f.acs).count();
    log::info!(
        "iommu: {} isolation groups for {} functions (ACS enabled on {with_acs})",
        iso.groups.len(),
        facts.len()
    );
    for g in iso.groups.iter().filter(|g| g.members.len() > 1) {
        log::info!("iommu: {g}");
    }
    for (segment, bdf, ids) in &iso.aliases {
        if ids.len() > 1 {
            log::info!("iommu: {segment:04x}:{bdf} DMA may carry requester ids {ids:04x?}");
        }
    }
    iso
}
