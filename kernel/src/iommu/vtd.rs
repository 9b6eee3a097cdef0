//! VT-d bring-up: DMAR -> usable DRHDs -> running units, and every PCI function routed.
#![deny(unsafe_code)]

use super::{faults, KernelVtd};
use crate::mem::KernelMemory;
use crate::mmio::MmioWindow;
use crate::pci::PciFunction;
use alloc::vec::Vec;
use iommu::acpi::pci::{Bdf as AcpiBdf, MemRange, PciBridge};
use iommu::acpi::resolve::DmarUnits;
use iommu::acpi::sanity::{check_dmar, PlatformFacts};
use iommu::acpi::summary::dmar_summary;
use iommu::acpi::Dmar;
use iommu::vtd::{InvalidationMode, IrState, VtdUnit};

/// Checks the parsed DMAR and enables every usable unit. `None` when no unit came up.
pub fn bring_up(
    dmar: &Dmar<'_>,
    pci: &[PciFunction],
    bridges: &[PciBridge],
    reserved: &[MemRange],
    ioapic_ids: &[u8],
    opts: &boot::cmdline::Options<'_>,
    firmware: &super::Firmware<'_>,
) -> Option<super::BroughtUp<KernelVtd>> {
    for line in dmar_summary(dmar) {
        log::info!("DMAR: {}", line.strip_prefix("DMAR: ").unwrap_or(&line));
    }
    let mut resolved = DmarUnits::new(dmar, bridges);
    let facts = PlatformFacts { reserved: Some(reserved), ioapic_ids: Some(ioapic_ids) };
    for w in check_dmar(dmar, &mut resolved, &facts).warnings {
        log::warn!("DMAR: {w}");
    }
    leave_broken_graphics_units_off(&mut resolved, pci);
    crate::arch::idt::register_handler(faults::FAULT_VECTOR, faults::fault_interrupt);
    let usable = resolved.units.iter().filter(|u| u.usable).map(|u| (u.index, u.base));
    let sizes: Vec<(usize, u64)> =
        resolved.units.iter().map(|u| (u.index, u.register_size)).collect();
    let size_of = |i: usize| sizes.iter().find(|(j, _)| *j == i).map_or(0x1000, |(_, s)| *s);
    // Chipset errata keyed by the host bridge (00:00.0 of segment 0).
    let host_bridge = pci
        .iter()
        .find(|f| f.bdf.segment == 0 && f.bdf.requester_id() == 0)
        .map(|f| (f.vendor, f.device));
    let quirks = iommu::vtd::Quirks {
        write_buffer_flush: host_bridge.is_some_and(iommu::vtd::quirks::needs_write_buffer_flush),
    };
    if quirks.write_buffer_flush {
        log::info!(
            "vtd: host bridge {host_bridge:04x?}: write-buffer flushing forced (chipset erratum)"
        );
    }
    super::start_and_route(
        "DRHD",
        usable,
        |i, base, early| start_unit(i, base, size_of(i), quirks, opts, early),
        pci,
        |f| {
            let bdf = AcpiBdf::from_id(f.bdf.requester_id());
            resolved.translating_unit(bridges, f.bdf.segment, bdf)
        },
        firmware,
    )
}

/// Linux's graphics quirk (`iommu::vtd::quirks`): on chipsets whose graphics DMA
/// remapping is broken, a DRHD serving graphics only is left off, so its devices get no
/// route and can never be assigned. Graphics-only units elsewhere are said as such.
fn leave_broken_graphics_units_off(resolved: &mut DmarUnits, pci: &[PciFunction]) {
    use iommu::vtd::quirks::{graphics_only, graphics_remapping_broken, leave_graphics_units_off};
    let class_of = |segment: u16, b: AcpiBdf| {
        pci.iter()
            .find(|f| f.bdf.segment == segment && f.bdf.requester_id() == b.id())
            .map(|f| f.class.0)
    };
    let broken = graphics_remapping_broken(pci.iter().map(|f| (f.vendor, f.device)));
    for u in resolved.units.iter().filter(|u| u.usable && graphics_only(u, class_of)) {
        log::info!(
            "DMAR: unit {} at {:#x} serves graphics only{}",
            u.index,
            u.base,
            if broken { "" } else { ": translated like any other" }
        );
    }
    for index in leave_graphics_units_off(resolved, broken, class_of) {
        log::warn!(
            "DMAR: unit {index}: left off: this chipset's graphics DMA remapping is broken \
             (Linux's quirk_iommu_igfx); its graphics device stays untranslated and cannot be \
             assigned"
        );
    }
}

fn start_unit(
    index: usize,
    base: u64,
    size: u64,
    quirks: iommu::vtd::Quirks,
    opts: &boot::cmdline::Options<'_>,
    early: &mut super::identity::FirmwareDma,
) -> Result<KernelVtd, alloc::string::String> {
    let mut unit = map_whole_unit(base, size)?;
    unit.set_quirks(quirks);
    if opts.vtd_register_invalidation {
        unit.set_invalidation_mode(InvalidationMode::Register)
            .map_err(|e| alloc::format!("{e}"))?;
    }
    let (cap, ecap) = unit.capabilities();
    // The line Linux prints for the same unit, to compare logs side by side.
    log::info!("DMAR: {}", iommu::linux_log::vtd_unit(index, base, unit.version(), cap.0, ecap.0));
    log::info!("DMAR: unit at {base:#x}:");
    for line in unit.describe() {
        log::info!("DMAR:   {line}");
    }
    if let Err(e) = unit.program_fault_interrupt(faults::FAULT_VECTOR, crate::apic::id()) {
        // Faults are still recorded and read by polling; only the interrupt is missing.
        log::warn!("DMAR: unit at {base:#x}: no fault-event interrupt: {e}");
    }
    // Firmware's RMRR ranges are in the root table before it is latched.
    let domain_count = unit.capabilities().0.domain_count();
    early.before_enable(index, &mut unit, domain_count);
    if let Err(e) = unit.enable() {
        early.unit_failed();
        return Err(alloc::format!("enable: {e}"));
    }
    log_hand_off(base, &unit);
    // Faults firmware left behind are reported once, then cleared.
    unit.handle_faults(|r| {
        log::warn!("DMAR: fault left by firmware: {}", iommu::linux_log::vtd_fault(r))
    });
    log::info!(
        "DMAR: unit at {base:#x} enabled: {}-level tables, {:?} invalidation",
        unit.levels(),
        unit.invalidation_mode()
    );
    log_interrupt_remapping(base, &unit);
    Ok(unit)
}

/// A fresh driver instance takes `old`'s unit over exactly as boot takes a unit over from
/// firmware (whatever state `old` left it in), with `old`'s invalidation mode; `old` must
/// then be dropped without touching the unit again.
pub(super) fn take_over(old: &KernelVtd) -> Result<KernelVtd, alloc::string::String> {
    let base = old.registers().base();
    let mut unit = map_whole_unit(base, old.register_span() as u64)?;
    unit.set_invalidation_mode(old.invalidation_mode()).map_err(|e| alloc::format!("{e}"))?;
    unit.set_quirks(old.quirks());
    if let Err(e) = unit.program_fault_interrupt(faults::FAULT_VECTOR, crate::apic::id()) {
        log::warn!("DMAR: unit at {base:#x}: no fault-event interrupt: {e}");
    }
    unit.enable().map_err(|e| alloc::format!("enable: {e}"))?;
    log_hand_off(base, &unit);
    Ok(unit)
}

/// Says what the enable found of firmware's state (nothing when the unit was idle).
pub(super) fn log_hand_off(base: u64, unit: &KernelVtd) {
    let h = unit.hand_off();
    if h.translation_was_on {
        log::warn!("DMAR: unit at {base:#x}: firmware left translation on; it stayed on while this driver's root table (every device blocked) replaced firmware's");
    }
    if h.firmware_queue_stopped {
        log::warn!(
            "DMAR: unit at {base:#x}: firmware's invalidation queue was running; stopped{}",
            if h.firmware_queue_timed_out {
                " after it failed to drain in time (its descriptors dropped)"
            } else {
                " once drained"
            }
        );
    }
    if h.stale_errors != 0 {
        log::warn!(
            "DMAR: unit at {base:#x}: stale FSTS error bits {:#x} (IQE/ITE/ICE/PFO) cleared",
            h.stale_errors
        );
    }
    if h.pmr_disabled {
        log::info!("DMAR: unit at {base:#x}: protected memory regions disabled (translation on)");
    }
}

/// The unit's interrupt remapping in one line, and what firmware had left on.
fn log_interrupt_remapping(base: u64, unit: &KernelVtd) {
    let handoff = unit.ir_handoff();
    if handoff.was_enabled {
        log::warn!("DMAR-IR: unit at {base:#x}: firmware left interrupt remapping on; taken down and reprogrammed");
    }
    if handoff.compatibility_format_was_allowed {
        log::warn!(
            "[Firmware Bug] DMAR-IR: unit at {base:#x}: firmware left compatibility-format \
             interrupts allowed (GCMD.CFI): any device could raise any vector; cleared"
        );
    }
    match unit.interrupt_remapping() {
        IrState::Enabled { x2apic } => log::info!(
            "DMAR-IR: unit at {base:#x}: interrupt remapping enabled ({} entries, {} destinations, \
             compatibility format blocked, source ids verified)",
            iommu::vtd::irq_remap::IRT_ENTRIES,
            if x2apic { "x2APIC" } else { "xAPIC" }
        ),
        IrState::Unavailable(why) => {
            log::warn!("DMAR-IR: unit at {base:#x}: interrupt remapping off: {why}")
        }
    }
}

/// Largest register window a unit may claim (DRHD size or CAP/ECAP offsets).
const MAX_REGISTER_WINDOW: usize = 0x10_0000;

/// Maps the unit's registers and creates its driver. The window covers the DRHD's size
/// and also every register CAP/ECAP place (fault records, IOTLB registers), which some
/// units put beyond the size firmware declared: when they lie outside, the window is
/// mapped again, large enough, and the driver created over it.
fn map_whole_unit(base: u64, drhd_size: u64) -> Result<KernelVtd, alloc::string::String> {
    let declared = (drhd_size.clamp(0x1000, MAX_REGISTER_WINDOW as u64)) as usize;
    let new = |len| -> Result<KernelVtd, alloc::string::String> {
        let window = MmioWindow::map(base, len)?;
        VtdUnit::new(window, KernelMemory).map_err(|e| alloc::format!("{e}"))
    };
    let unit = new(declared)?;
    let span = unit.register_span();
    if span <= declared {
        return Ok(unit);
    }
    if span > MAX_REGISTER_WINDOW {
        return Err(alloc::format!(
            "registers span {span:#x} bytes (CAP/ECAP offsets), more than any unit has"
        ));
    }
    log::warn!(
        "[Firmware Bug] DMAR: unit at {base:#x}: DRHD size {declared:#x} but CAP/ECAP place \
         registers up to {span:#x}; mapping {span:#x} bytes"
    );
    // The first driver (dropped here) never touched a control register; only its empty
    // root-table frame is left behind, once per such unit.
    let unit = new(span)?;
    if unit.register_span() > span {
        return Err("CAP/ECAP changed between two reads".into());
    }
    Ok(unit)
}
