//! AMD-Vi bring-up: IVRS -> usable IVHDs -> running units, and every PCI function routed.

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
use iommu::amdvi::AmdViUnit;

/// Highest device id any entry of the unit names: the device table must cover it.
fn max_device_id(u: &IvrsUnit<'_>) -> u16 {
    let ranges = u.ranges.iter().map(|r| r.last.max(r.alias.unwrap_or(0)));
    let specials = u.specials.iter().map(|s| s.device_id);
    ranges.chain(specials).chain([u.iommu_device_id]).max().unwrap_or(0)
}

/// Parses the IVRS, checks it, and enables every usable unit. `None` when the table is
/// unusable or no unit came up.
pub fn bring_up(
    table: &[u8],
    pci: &[PciFunction],
    reserved: &[MemRange],
    ioapic_ids: &[u8],
) -> Option<(Vec<KernelAmdVi>, super::RouteTable)> {
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
    let usable: Vec<(usize, u64, u16)> = resolved
        .units
        .iter()
        .filter(|u| u.usable)
        .map(|u| (u.index, u.base, max_device_id(u)))
        .collect();
    let max_id = |i: usize| usable.iter().find(|(j, ..)| *j == i).map_or(0, |u| u.2);
    super::start_and_route(
        "IVHD",
        usable.iter().map(|u| (u.0, u.1)),
        |i, base| start_unit(base, max_id(i)),
        pci,
        |f| resolved.translating_unit(f.bdf.segment, f.bdf.requester_id()),
    )
}

fn start_unit(base: u64, max_devid: u16) -> Result<KernelAmdVi, alloc::string::String> {
    let window = MmioWindow::map(base, IVHD_WINDOW_SIZE as usize)?;
    let mut unit =
        AmdViUnit::new(window, KernelMemory, max_devid).map_err(|e| alloc::format!("{e}"))?;
    log::info!("AMD-Vi: unit at {base:#x} (device ids up to {max_devid:#06x}):");
    for line in unit.describe() {
        log::info!("AMD-Vi:   {line}");
    }
    unit.enable().map_err(|e| alloc::format!("enable: {e}"))?;
    log::info!(
        "AMD-Vi: unit at {base:#x} enabled: {}-level tables, every device blocked",
        unit.levels()
    );
    Ok(unit)
}
