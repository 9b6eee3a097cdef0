//! Memory firmware says devices use behind the OS's back: VT-d RMRRs and AMD-Vi IVMDs
//! (USB legacy emulation, integrated graphics stolen memory, management engines).
//!
//! A device with such a region cannot be handed to a partition safely: its firmware-driven
//! DMA would need an identity mapping inside the partition's address space. Like Linux's
//! VFIO, the hypervisor refuses to assign it, and says why.

use crate::acpi::pci::{Bdf, MemRange, PciBridge};
use crate::acpi::resolve::{resolve_scope, ResolvedScope, ScopeProblem};
use crate::acpi::{Dmar, Ivrs};
use alloc::vec::Vec;

/// Which devices a reserved region belongs to.
#[derive(Debug, Clone)]
enum Devices {
    /// Every device (IVMD type 0x20).
    All,
    /// Device ids `first..=last` (IVMD 0x21 and 0x22).
    Ids(u16, u16),
    /// A resolved DMAR device scope (an endpoint, or a bridge and what is behind it).
    Scope(ResolvedScope),
}

/// One firmware-reserved region and the devices using it.
#[derive(Debug, Clone)]
pub struct ReservedRegion {
    segment: u16,
    devices: Devices,
    /// The memory (inclusive end).
    pub range: MemRange,
    /// "RMRR" or "IVMD", for messages.
    pub source: &'static str,
}

impl ReservedRegion {
    /// Whether device `rid` on `segment` uses this region.
    pub fn applies_to(&self, segment: u16, rid: u16) -> bool {
        segment == self.segment
            && match &self.devices {
                Devices::All => true,
                Devices::Ids(first, last) => (*first..=*last).contains(&rid),
                Devices::Scope(s) => s.covers(Bdf::from_id(rid)),
            }
    }
}

/// The RMRRs of a DMAR, with their scopes resolved through `bridges`, and the scopes
/// that could not be resolved (with the RMRR's base) for the caller to report.
pub fn from_dmar(
    dmar: &Dmar<'_>,
    bridges: &[PciBridge],
) -> (Vec<ReservedRegion>, Vec<(u64, ScopeProblem)>) {
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    for r in dmar.rmrrs() {
        for scope in r.scopes.clone() {
            match resolve_scope(r.segment, &scope, bridges) {
                Ok(resolved) => out.push(ReservedRegion {
                    segment: r.segment,
                    devices: Devices::Scope(resolved),
                    range: MemRange { start: r.base, end: r.limit },
                    source: "RMRR",
                }),
                Err(e) => problems.push((r.base, e)),
            }
        }
    }
    (out, problems)
}

/// The IVMDs of an IVRS (segment 0: IVMD blocks carry no segment).
pub fn from_ivrs(ivrs: &Ivrs<'_>) -> Vec<ReservedRegion> {
    ivrs.ivmds()
        .filter(|m| m.size > 0)
        .map(|m| ReservedRegion {
            segment: 0,
            devices: match m.kind {
                0x20 => Devices::All,
                0x21 => Devices::Ids(m.device_id, m.device_id),
                _ => Devices::Ids(m.device_id, m.aux),
            },
            range: MemRange { start: m.start, end: m.start.saturating_add(m.size - 1) },
            source: "IVMD",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn rmrr_belongs_to_its_scope_only() {
        // HM570 desktop: RMRR 0x7c000000-0x807fffff for the integrated GPU at 00:02.0.
        let bytes = table("dmar/dmar-00089523c3bb.bin");
        let dmar = Dmar::parse(&bytes).unwrap();
        let (regions, problems) = from_dmar(&dmar, &[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(regions.len(), 1);
        let gpu = Bdf::new(0, 2, 0).unwrap().id();
        assert!(regions[0].applies_to(0, gpu));
        assert!(!regions[0].applies_to(0, Bdf::new(0, 3, 0).unwrap().id()));
        assert!(!regions[0].applies_to(1, gpu), "another segment");
        assert_eq!(regions[0].range, MemRange { start: 0x7c00_0000, end: 0x807f_ffff });
    }

    #[test]
    fn every_corpus_table_yields_regions_without_panicking() {
        let dir = format!("{}/testdata", env!("CARGO_MANIFEST_DIR"));
        let (mut rmrrs, mut ivmds) = (0, 0);
        for kind in ["dmar", "ivrs"] {
            for e in std::fs::read_dir(format!("{dir}/{kind}")).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_none_or(|x| x != "bin") {
                    continue;
                }
                let bytes = std::fs::read(&p).unwrap();
                if kind == "dmar" {
                    let d = Dmar::parse(&bytes).unwrap();
                    rmrrs += from_dmar(&d, &[]).0.len();
                } else {
                    let t = Ivrs::parse(&bytes).unwrap();
                    for r in from_ivrs(&t) {
                        assert!(r.range.start <= r.range.end);
                        ivmds += 1;
                    }
                }
            }
        }
        // The corpus README counts 524 RMRR structures and 13 IVMD blocks; RMRRs with
        // several scopes give a region per scope.
        assert!(rmrrs >= 500, "{rmrrs} RMRR regions");
        assert!((1..=13).contains(&ivmds), "{ivmds} IVMD regions");
    }
}
