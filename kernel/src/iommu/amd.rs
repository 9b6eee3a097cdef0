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

/// Checks the parsed IVRS and enables every usable unit. `None` when no unit came up.
/// Also returns, per unit brought up, why it does not remap interrupts (`None`: it does).
pub fn bring_up<'t>(
    ivrs: &Ivrs<'t>,
    pci: &[PciFunction],
    reserved: &[MemRange],
    ioapic_ids: &[u8],
    firmware: &super::Firmware<'_>,
) -> Option<(super::BroughtUp<KernelAmdVi>, Vec<Option<alloc::string::String>>)> {
    for line in ivrs_summary(ivrs) {
        log::info!("AMD-Vi: {line}");
    }
    let mut resolved = IvrsUnits::new(ivrs);
    let facts = PlatformFacts { reserved: Some(reserved), ioapic_ids: Some(ioapic_ids) };
    for w in check_ivrs(ivrs, &mut resolved, &facts).warnings {
        log::warn!("AMD-Vi: {w}");
    }
    let (family, model) = crate::report::cpu::family_model();
    let errata = iommu::amdvi::errata::errata_for(family, model);
    let usable: Vec<(usize, u64, u16, u8)> = resolved
        .units
        .iter()
        .filter(|u| u.usable)
        .map(|u| (u.index, u.base, max_device_id(u), u.flags))
        .collect();
    let unit_of = |i: usize| usable.iter().find(|(j, ..)| *j == i).map_or((0, 0), |u| (u.2, u.3));
    let ivhd = |i: usize| resolved.units.iter().find(|u| u.index == i);
    crate::arch::idt::register_handler(super::faults::FAULT_VECTOR, super::faults::fault_interrupt);
    let mut ir_problems = Vec::new();
    let up = super::start_and_route(
        "IVHD",
        usable.iter().map(|u| (u.0, u.1)),
        |i, base, early| {
            if let Some(u) = ivhd(i) {
                apply_errata(base, u, pci, errata);
            }
            let function = ivhd(i).and_then(|u| iommu_function(u, pci));
            let mut unit = start_unit(i, base, unit_of(i), function, early)?;
            let problem = match ivhd(i) {
                Some(u) => set_up_interrupt_sources(base, &mut unit, u, ioapic_ids),
                None => Ok(Some("no IVHD".into())),
            };
            match problem {
                Ok(problem) => ir_problems.push(problem),
                Err(e) => {
                    // Skipped after all, failing closed: translation stays on with every
                    // device blocked (disabling it would let their DMA through
                    // untranslated), and its id space is gone, so nothing is routed to it.
                    early.unit_failed();
                    return Err(e);
                }
            }
            Ok(unit)
        },
        pci,
        |f| resolved.translating_unit(f.bdf.segment, f.bdf.requester_id()),
        firmware,
    )?;
    Some((up, ir_problems))
}

/// The unit's own PCI function (the IVHD's device id), when enumeration found it.
fn iommu_function<'p>(ivhd: &IvrsUnit<'_>, pci: &'p [PciFunction]) -> Option<&'p PciFunction> {
    pci.iter()
        .find(|f| f.bdf.segment == ivhd.segment && f.bdf.requester_id() == ivhd.iommu_device_id)
}

/// Points the IOMMU function's MSI at [`super::faults::FAULT_VECTOR`] on this CPU, so
/// logged events interrupt and are drained at the next exit to the hypervisor. `Err`
/// says why the unit stays without an interrupt (its log is then read only by polling).
fn program_event_interrupt(
    unit: &mut KernelAmdVi,
    function: Option<&PciFunction>,
) -> Result<crate::pci::Bdf, &'static str> {
    let f = function.ok_or("its PCI function was not enumerated")?;
    let msi = crate::msi::Msi::find(f.config()).ok_or("its PCI function has no MSI capability")?;
    let apic = u8::try_from(crate::apic::id()).map_err(|_| "an APIC id above 255")?;
    msi.program(0xFEE0_0000 | (u64::from(apic) << 12), u16::from(super::faults::FAULT_VECTOR));
    unit.set_event_interrupt(true);
    Ok(f.bdf)
}

fn start_unit(
    index: usize,
    base: u64,
    (max_devid, ivhd_flags): (u16, u8),
    function: Option<&PciFunction>,
    early: &mut super::identity::FirmwareDma,
) -> Result<KernelAmdVi, alloc::string::String> {
    let window = MmioWindow::map(base, IVHD_WINDOW_SIZE as usize)?;
    let mut unit =
        AmdViUnit::new(window, KernelMemory, max_devid).map_err(|e| alloc::format!("{e}"))?;
    unit.set_ivhd_flags(ivhd_flags);
    match program_event_interrupt(&mut unit, function) {
        Ok(bdf) => log::info!(
            "AMD-Vi: unit at {base:#x}: event-log interrupt through {bdf}'s MSI, vector {}",
            super::faults::FAULT_VECTOR
        ),
        Err(why) => log::warn!(
            "AMD-Vi: unit at {base:#x}: no event-log interrupt ({why}): events are read only \
             when something polls"
        ),
    }
    log::info!("AMD-Vi: unit at {base:#x} (device ids up to {max_devid:#06x}):");
    for line in unit.describe() {
        log::info!("AMD-Vi:   {line}");
    }
    // IVMD ranges are in the device table before translation goes on.
    early.before_enable(index, &mut unit, 1 << 16);
    unit.enable().map_err(|e| {
        early.unit_failed();
        alloc::format!(
            "enable: {e}; the unit was disabled again on purpose (its devices' DMA is not \
             translated, so none of them can be assigned)"
        )
    })?;
    log::info!(
        "AMD-Vi: unit at {base:#x} enabled: {}-level tables, every device blocked",
        unit.levels()
    );
    log_smi_filters(base, unit.smi_filters());
    Ok(unit)
}

/// What enable did to the SMI filter (EFR.SmiFSup), one line.
fn log_smi_filters(base: u64, f: &iommu::amdvi::SmiFilterLock) {
    if f.registers == 0 {
        log::info!(
            "AMD-Vi: unit at {base:#x}: no SMI filter registers (EFR.SmiFSup): device SMIs \
             are refused by every device table entry (SysMgt = 00b)"
        );
        return;
    }
    log::info!(
        "AMD-Vi: unit at {base:#x}: SMI filter locked: {} registers, {} locked now, {} locked \
         by firmware, SMIs allowed only from {:04x?}",
        f.registers,
        f.locked_now,
        f.firmware_locked,
        f.allowed
    );
    if f.failed > 0 {
        log::warn!(
            "AMD-Vi: unit at {base:#x}: {} SMI filter registers did not lock (the unit ignored \
             the write)",
            f.failed
        );
    }
}

/// The IOMMU's PCI function as the errata code reaches it.
struct IommuFunction(crate::pci::ConfigSpace);

impl iommu::amdvi::errata::IommuConfig for IommuFunction {
    fn read32(&mut self, offset: u16) -> u32 {
        self.0.read32(offset)
    }
    fn write32(&mut self, offset: u16, value: u32) {
        self.0.write32(offset, value)
    }
}

/// Applies this processor family's IOMMU errata (see `iommu::amdvi::errata`) through the
/// unit's PCI function, before the unit is enabled; logs each.
fn apply_errata(
    base: u64,
    ivhd: &IvrsUnit<'_>,
    pci: &[PciFunction],
    errata: &[iommu::amdvi::errata::Erratum],
) {
    use iommu::amdvi::errata::{apply, Applied};
    if errata.is_empty() {
        return;
    }
    let Some(function) = iommu_function(ivhd, pci) else {
        log::warn!(
            "AMD-Vi: unit at {base:#x}: its PCI function {:#06x} was not enumerated: errata \
             workarounds not applied",
            ivhd.iommu_device_id
        );
        return;
    };
    let mut cfg = IommuFunction(function.config());
    for &e in errata {
        match apply(&mut cfg, e) {
            Applied::AlreadySet => {
                log::info!(
                    "AMD-Vi: {}: {} workaround already set by firmware",
                    function.bdf,
                    e.name
                )
            }
            Applied::Set => log::info!("AMD-Vi: {}: applying {} workaround", function.bdf, e.name),
            Applied::Ignored => log::warn!(
                "AMD-Vi: {}: {} workaround written but the bit reads clear",
                function.bdf,
                e.name
            ),
        }
    }
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

/// A fresh driver instance takes `old`'s unit over exactly as boot takes a unit over from
/// firmware (whatever state `old` or a test left it in): a new device table with every
/// device blocked, Control built from zero, `old`'s event interrupt and platform
/// interrupt sources. `old` must then be dropped without touching the unit again.
pub(super) fn take_over(old: &KernelAmdVi) -> Result<KernelAmdVi, alloc::string::String> {
    let base = old.registers().base();
    let window = MmioWindow::map(base, IVHD_WINDOW_SIZE as usize)?;
    let max_devid = u16::try_from(old.device_table_entries().saturating_sub(1)).unwrap_or(u16::MAX);
    let mut unit =
        AmdViUnit::new(window, KernelMemory, max_devid).map_err(|e| alloc::format!("{e}"))?;
    unit.set_ivhd_flags(old.ivhd_flags());
    unit.set_event_interrupt(old.event_interrupt());
    unit.enable().map_err(|e| alloc::format!("enable: {e}"))?;
    for &(devid, setting) in old.platform_sources() {
        unit.set_platform_source(devid, setting).map_err(|e| alloc::format!("{e}"))?;
    }
    log::info!("AMD-Vi: unit at {base:#x} taken over by a fresh driver instance");
    Ok(unit)
}
