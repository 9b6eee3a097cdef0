//! AMD-Vi bring-up: IVRS -> usable IVHDs -> running units, and every PCI function routed.
#![deny(unsafe_code)]

use super::KernelAmdVi;
use crate::mem::KernelMemory;
use crate::mmio::MmioWindow;
use crate::pci::PciFunction;
use alloc::vec::Vec;
use iommu::acpi::pci::MemRange;
use iommu::acpi::resolve::{IvrsUnit, IvrsUnits};
use iommu::acpi::sanity::{check_ivrs, PlatformFacts, IVHD_WINDOW_SIZE};
use iommu::acpi::summary::ivrs_summary;
use iommu::acpi::Ivrs;
use iommu::amdvi::{AmdViUnit, DeviceSetting};

/// Highest device id any entry of the unit names: the device table must cover it.
fn max_device_id(u: &IvrsUnit<'_>) -> u16 {
    let ranges = u.ranges.iter().map(|r| r.last.max(r.alias.unwrap_or(0)));
    let specials = u.specials.iter().map(|s| s.device_id);
    let hids = u.hids.iter().map(|h| h.device_id);
    ranges.chain(specials).chain(hids).chain([u.iommu_device_id]).max().unwrap_or(0)
}

/// Parses the IVRS, checks it, and enables every usable unit. `None` when the table is
/// unusable or no unit came up.
/// Also returns, per unit brought up, why it does not remap interrupts (`None`: it does).
pub fn bring_up(
    table: &[u8],
    pci: &[PciFunction],
    reserved: &[MemRange],
    ioapic_ids: &[u8],
) -> Option<(Vec<KernelAmdVi>, super::RouteTable, Vec<Option<alloc::string::String>>)> {
    let ivrs = match Ivrs::parse(table) {
        Ok(t) => t,
        Err(e) => {
            log::error!("[Firmware Bug] IVRS: {e}; AMD-Vi stays off");
            return None;
        }
    };
    for line in ivrs_summary(&ivrs) {
        log::info!("AMD-Vi: {line}");
    }
    let mut resolved = IvrsUnits::new(&ivrs);
    let facts = PlatformFacts { reserved: Some(reserved), ioapic_ids: Some(ioapic_ids) };
    for w in check_ivrs(&ivrs, &mut resolved, &facts).warnings {
        log::warn!("AMD-Vi: {w}");
    }
    let usable: Vec<(usize, u64, u16, u8)> = resolved
        .units
        .iter()
        .filter(|u| u.usable)
        .map(|u| (u.index, u.base, max_device_id(u), u.flags))
        .collect();
    let unit_of = |i: usize| usable.iter().find(|(j, ..)| *j == i).map_or((0, 0), |u| (u.2, u.3));
    let ivhd = |i: usize| resolved.units.iter().find(|u| u.index == i);
    let mut ir_problems = Vec::new();
    let (units, routes) = super::start_and_route(
        "IVHD",
        usable.iter().map(|u| (u.0, u.1)),
        |i, base| {
            let mut unit = start_unit(base, unit_of(i))?;
            let problem = match ivhd(i) {
                Some(u) => set_up_interrupt_sources(base, &mut unit, u, ioapic_ids)?,
                None => Some("no IVHD".into()),
            };
            ir_problems.push(problem);
            Ok(unit)
        },
        pci,
        |f| resolved.translating_unit(f.bdf.segment, f.bdf.requester_id()),
    )?;
    Some((units, routes, ir_problems))
}

fn start_unit(
    base: u64,
    (max_devid, ivhd_flags): (u16, u8),
) -> Result<KernelAmdVi, alloc::string::String> {
    let window = MmioWindow::map(base, IVHD_WINDOW_SIZE as usize)?;
    let mut unit =
        AmdViUnit::new(window, KernelMemory, max_devid).map_err(|e| alloc::format!("{e}"))?;
    unit.set_ivhd_flags(ivhd_flags);
    log::info!("AMD-Vi: unit at {base:#x} (device ids up to {max_devid:#06x}):");
    for line in unit.describe() {
        log::info!("AMD-Vi:   {line}");
    }
    unit.enable().map_err(|e| {
        alloc::format!(
            "enable: {e}; the unit was disabled again on purpose (its devices' DMA is not \
             translated, so none of them can be assigned)"
        )
    })?;
    log::info!(
        "AMD-Vi: unit at {base:#x} enabled: {}-level tables, every device blocked",
        unit.levels()
    );
    Ok(unit)
}

/// Honours the IVHD device-setting bytes where they may be honoured: the IOAPIC and HPET
/// special device ids keep the pass bits firmware asks for (their NMI and ExtINT lines
/// are platform wiring); an endpoint never gets one (it could forge NMIs or INITs with
/// it), and that is logged. Then says whether interrupt remapping covers the platform: as
/// Linux requires, every IOAPIC of the MADT must have its special entry in this IVRS.
/// Returns why remapping is incomplete (`None` when it is complete).
fn set_up_interrupt_sources(
    base: u64,
    unit: &mut KernelAmdVi,
    ivhd: &IvrsUnit<'_>,
    ioapic_ids: &[u8],
) -> Result<Option<alloc::string::String>, alloc::string::String> {
    use iommu::acpi::ivrs_entry::{SPECIAL_HPET, SPECIAL_IOAPIC};
    for s in &ivhd.specials {
        let what = match s.variety {
            SPECIAL_IOAPIC => "IOAPIC",
            SPECIAL_HPET => "HPET",
            _ => continue,
        };
        let setting = DeviceSetting(s.data);
        unit.set_platform_source(s.device_id, setting)
            .map_err(|e| alloc::format!("interrupt fields of {what} {}: {e}", s.handle))?;
        log::info!(
            "AMD-Vi: unit at {base:#x}: {what} {} is device id {:#06x}: interrupts remapped{}",
            s.handle,
            s.device_id,
            if setting.asks_for_passing() {
                alloc::format!(", firmware's {} kept", setting.words())
            } else {
                alloc::string::String::new()
            }
        );
    }
    for r in ivhd.ranges.iter().filter(|r| DeviceSetting(r.data).asks_for_passing()) {
        log::warn!(
            "AMD-Vi: unit at {base:#x}: IVHD asks for {} on device ids {:#06x}-{:#06x}: not \
             granted (an endpoint could forge those interrupts)",
            DeviceSetting(r.data).words(),
            r.first,
            r.last
        );
    }
    let missing: Vec<u8> = ioapic_ids
        .iter()
        .copied()
        .filter(|id| !ivhd.specials.iter().any(|s| s.variety == SPECIAL_IOAPIC && s.handle == *id))
        .collect();
    if missing.is_empty() {
        log::info!(
            "AMD-Vi: unit at {base:#x}: interrupt remapping enabled (every device id: IV=1, \
             2048-entry table of aborting entries, no pass bits)"
        );
        Ok(None)
    } else {
        let why = alloc::format!("the IVRS names no device id for IOAPIC(s) {missing:?}");
        log::warn!("AMD-Vi: unit at {base:#x}: interrupt remapping incomplete: {why}");
        Ok(Some(why))
    }
}
