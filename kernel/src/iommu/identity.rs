//! Firmware-reserved memory (RMRR, IVMD) stays reachable when translation goes on: on
//! real machines USB legacy emulation and integrated GPUs keep DMAing to these ranges, and
//! blocking them hangs firmware-owned devices. Each routed function with reserved
//! regions gets its own domain that maps exactly those ranges 1:1 and nothing else,
//! attached for every requester id its DMA may carry, and installed before its unit
//! enables translation ([`FirmwareDma`]), so there is no moment where that DMA is blocked.
//! (Such functions are never assigned to partitions: see `partition::config`.)
#![deny(unsafe_code)]

use super::{DomainIds, ReservedRegion, Route};
use crate::mem::KernelMemory;
use crate::pci::Bdf;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use iommu::domain::Domain;
use iommu::invalidate::IovaBlock;
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

const PAGE: u64 = 4096;

/// IVMD flags: the device may read (IR) / write (IW) the range; an exclusion range is
/// reached untranslated, i.e. with full access.
const IVMD_READ: u8 = 1 << 1;
const IVMD_WRITE: u8 = 1 << 2;
const IVMD_EXCLUSION: u8 = 1 << 3;

/// A range a device keeps reaching at its own address, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentityRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive, as firmware states it).
    pub end: u64,
    /// The access firmware grants (RMRR: read/write; IVMD: its IR/IW flags).
    pub prot: Prot,
}

/// The access an IVMD flag byte grants.
pub fn ivmd_prot(flags: u8) -> Prot {
    if flags & IVMD_EXCLUSION != 0 {
        return Prot::READ | Prot::WRITE;
    }
    let mut prot = Prot::empty();
    if flags & IVMD_READ != 0 {
        prot |= Prot::READ;
    }
    if flags & IVMD_WRITE != 0 {
        prot |= Prot::WRITE;
    }
    prot
}

/// The access a reserved region grants: RMRRs are read/write; an IVMD's comes from the
/// flags of the IVRS block(s) stating that range.
fn region_prot(region: &ReservedRegion, ivrs: Option<&iommu::acpi::Ivrs<'_>>) -> Prot {
    let Some(ivrs) = ivrs.filter(|_| region.source == "IVMD") else {
        return Prot::READ | Prot::WRITE;
    };
    ivrs.ivmds()
        .filter(|m| m.size > 0 && m.start == region.range.start)
        .filter(|m| m.start.saturating_add(m.size - 1) == region.range.end)
        .fold(Prot::empty(), |p, m| p | ivmd_prot(m.flags))
}

/// Page-rounds `ranges` outward and merges overlapping ones (their access united), so
/// each page is mapped once. `Err` for a range that is empty or wraps.
fn page_ranges(ranges: &[IdentityRange]) -> Result<Vec<(u64, u64, Prot)>, String> {
    let mut out: Vec<(u64, u64, Prot)> = Vec::new();
    for r in ranges {
        let end = r.end.checked_add(1).filter(|&e| r.start < e);
        let end = end.and_then(|e| e.checked_next_multiple_of(PAGE));
        let Some(end) = end else {
            return Err(format!("reserved range {:#x}-{:#x} is empty or wraps", r.start, r.end));
        };
        out.push((r.start & !(PAGE - 1), end, r.prot));
    }
    out.sort_unstable_by_key(|r| r.0);
    let mut merged: Vec<(u64, u64, Prot)> = Vec::new();
    for r in out {
        match merged.last_mut() {
            Some(last) if r.0 < last.1 => {
                last.1 = last.1.max(r.1);
                last.2 |= r.2;
            }
            _ => merged.push(r),
        }
    }
    Ok(merged)
}

/// Builds a domain on `unit` (number `unit_index`) that maps exactly `ranges` 1:1 and
/// points every requester id in `rids` (the device's own first, then its aliases: its DMA
/// may carry any of them) at it. Ranges without any access are left unmapped. On `Err`
/// nothing is left attached and the id is given back.
pub fn attach_identity<U: RemappingUnit>(
    unit: &mut U,
    unit_index: usize,
    ids: &mut DomainIds,
    rids: &[u16],
    ranges: &[IdentityRange],
) -> Result<Domain<U::Format>, String> {
    let mem = &mut KernelMemory;
    let pages = page_ranges(ranges)?;
    let format = unit.domain_format().map_err(|e| format!("domain format: {e}"))?;
    let id = ids.alloc(unit_index)?;
    let mut dom = match Domain::new(mem, id, unit_index, format) {
        Ok(d) => d,
        Err(e) => {
            ids.free(unit_index, id);
            return Err(format!("new domain: {e}"));
        }
    };
    let filled = (|| -> Result<(), String> {
        for &(start, end, prot) in pages.iter().filter(|r| !r.2.is_empty()) {
            dom.map(mem, start, start, end - start, prot)
                .map_err(|e| format!("map {start:#x}-{end:#x}: {e}"))?;
            unit.after_map(id, IovaBlock::covering(start, end - start))
                .and_then(|()| unit.sync())
                .map_err(|e| format!("after map: {e}"))?;
        }
        for &rid in rids {
            unit.attach_device(rid, &dom).map_err(|e| format!("attach {rid:#06x}: {e}"))?;
        }
        Ok(())
    })();
    if let Err(e) = filled {
        // A failed attach may have left context/device-table entries: block them first.
        let blocked = rids
            .iter()
            .try_for_each(|&rid| unit.block_device(rid))
            .and_then(|()| unit.invalidate_domain(id));
        match blocked.and_then(|()| unit.sync()) {
            Ok(()) => {
                dom.destroy(mem);
                ids.free(unit_index, id);
            }
            Err(b) => log::error!("iommu: cannot block {rids:04x?} after a failed attach: {b}"),
        }
        return Err(e);
    }
    Ok(dom)
}

/// One function whose firmware-reserved regions stay reachable: what to map and for which
/// requester ids.
struct Planned {
    bdf: Bdf,
    /// The DMAR/IVRS table index of its unit.
    unit: usize,
    /// Its requester id at that unit first, then every alias.
    rids: Vec<u16>,
    ranges: Vec<IdentityRange>,
    sources: Vec<&'static str>,
}

/// Firmware DMA kept reachable from the first moment translation is on: planned from the
/// routes before any unit starts, installed unit by unit just before each enables
/// translation (so firmware's USB or graphics DMA to its RMRR/IVMD ranges is never
/// blocked, not even for a moment), and the domain-id spaces built along the way.
pub struct FirmwareDma {
    plan: Vec<Planned>,
    ids: DomainIds,
    kept: usize,
}

impl FirmwareDma {
    /// Every routed function (`routes` by table index) that uses firmware-reserved memory,
    /// with all the requester ids `isolation` says its DMA may carry.
    pub(crate) fn plan(
        routes: &[(Bdf, Route)],
        firmware: &super::Firmware<'_>,
        isolation: &iommu::acpi::groups::Isolation,
    ) -> FirmwareDma {
        let plan = routes
            .iter()
            .filter_map(|(bdf, route)| {
                let regions: Vec<&ReservedRegion> = firmware
                    .reserved
                    .iter()
                    .filter(|r| r.applies_to(bdf.segment, bdf.requester_id()))
                    .collect();
                if regions.is_empty() {
                    return None;
                }
                let ranges = regions
                    .iter()
                    .map(|r| IdentityRange {
                        start: r.range.start,
                        end: r.range.end,
                        prot: region_prot(r, firmware.ivrs),
                    })
                    .collect();
                Some(Planned {
                    bdf: *bdf,
                    unit: route.unit,
                    rids: super::dma_ids_of(isolation, *bdf, route.requester_id),
                    ranges,
                    sources: regions.iter().map(|r| r.source).collect(),
                })
            })
            .collect();
        FirmwareDma { plan, ids: DomainIds::default(), kept: 0 }
    }

    /// Called for the unit of table index `index` after it was set up and before it
    /// enables translation: adds its domain-id space (`domain_count` ids) and attaches
    /// every planned function of that unit to an identity domain of exactly its ranges.
    /// The domains live for the whole run (the devices use them until power-off), so
    /// their tables are never freed.
    pub fn before_enable<U: RemappingUnit>(
        &mut self,
        index: usize,
        unit: &mut U,
        domain_count: u32,
    ) {
        let position = self.ids.add_unit(domain_count);
        for p in self.plan.iter().filter(|p| p.unit == index) {
            match attach_identity(unit, position, &mut self.ids, &p.rids, &p.ranges) {
                Ok(dom) => {
                    for (source, range) in p.sources.iter().zip(&p.ranges) {
                        log::info!(
                            "iommu: {} keeps {source} {:#x}-{:#x} identity-mapped (firmware DMA, \
                             {}), installed before translation is enabled",
                            p.bdf,
                            range.start,
                            range.end,
                            prot_text(range.prot)
                        );
                    }
                    if p.rids.len() > 1 {
                        log::info!(
                            "iommu: {}: its identity domain also answers its aliases {:04x?}",
                            p.bdf,
                            &p.rids[1..]
                        );
                    }
                    self.kept += 1;
                    // In use by the device for the rest of the run.
                    core::mem::forget(dom);
                }
                Err(e) => log::error!(
                    "iommu: {}: cannot keep its firmware-reserved memory reachable ({e}); its \
                     firmware DMA will fault",
                    p.bdf
                ),
            }
        }
    }

    /// The unit last passed to [`before_enable`](Self::before_enable) did not start:
    /// its id space goes (its identity domains stay with the unit, never used).
    pub fn unit_failed(&mut self) {
        self.ids.remove_last();
    }

    /// The domain-id spaces of the units that started (identity domains' ids live), and
    /// how many functions were kept reachable.
    pub fn finish(self) -> (DomainIds, usize) {
        (self.ids, self.kept)
    }
}

fn prot_text(p: Prot) -> &'static str {
    match (p.contains(Prot::READ), p.contains(Prot::WRITE)) {
        (true, true) => "read/write",
        (true, false) => "read-only",
        (false, true) => "write-only",
        (false, false) => "no access: left unmapped",
    }
}
