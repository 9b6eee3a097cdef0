//! `mode=report`: look at the machine, program nothing. No IOMMU register is written (the
//! units' capability registers are only read), no partition is created, no device is
//! touched beyond enumeration's BAR sizing. The report names the processor, memory,
//! ACPI tables, every PCI function with its class, every IOMMU unit with CAP/ECAP/EFR in
//! words and hex, which unit and requester id each device's DMA carries, the isolation
//! groups, RMRR/IVMD regions, interrupt-remapping support, a verdict per device and a
//! configuration skeleton; it ends with success. `report=json` prints the same as JSON
//! lines (docs/report-json.md). The verdicts come from [`iommu::assign`], shared with
//! `cargo xtask inspect --machine`.

pub mod cpu;

use crate::acpi::AcpiInfo;
use crate::mmio::MmioWindow;
use crate::pci::{Bar, PciFunction};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use boot::console::UartAccess;
use boot::{BootInfo, MemoryKind};
use iommu::acpi::pci::{Bdf as AcpiBdf, MemRange};
use iommu::assign::render::{self, UnitRegisters};
use iommu::assign::{self as assign, Architecture, BarInfo, ConsoleAt, Function, MachineFacts};

/// The line before the configuration skeleton (tests and people cut it out between these).
pub const SKELETON_BEGIN: &str = "---- configuration skeleton ----";
/// The line after it.
pub const SKELETON_END: &str = "---- end of configuration skeleton ----";

/// VT-d register offsets read (never written) for the report.
const VTD_VER: usize = 0x00;
const VTD_CAP: usize = 0x08;
const VTD_ECAP: usize = 0x10;
const VTD_GSTS: usize = 0x1C;
/// AMD-Vi register offsets read for the report.
const AMDVI_CONTROL: usize = 0x18;
const AMDVI_EFR: usize = 0x30;

fn function(f: &PciFunction) -> Function {
    let bars = f
        .bars
        .iter()
        .map(|(slot, b)| match *b {
            Bar::Memory { base, size, .. } => {
                BarInfo { slot: *slot as u8, memory: true, base, size }
            }
            Bar::Io { base, size } => {
                BarInfo { slot: *slot as u8, memory: false, base: base as u64, size: size as u64 }
            }
        })
        .collect();
    Function {
        segment: f.bdf.segment,
        bdf: AcpiBdf::from_id(f.bdf.requester_id()),
        vendor: f.vendor,
        device: f.device,
        class: f.class,
        bridge: f.bridge,
        pcie_type: f.pcie_type,
        bars,
        // Extended configuration space exists only for PCI Express functions.
        acs: f.pcie_type.and_then(|_| {
            let cfg = f.config();
            assign::find_acs(|off| Some(cfg.read32(off)))
        }),
    }
}

/// Reads one unit's identification registers and its enable state; None when its
/// registers cannot be mapped. `enabled` is GSTS.TES (VT-d) or CONTROL.IommuEn (AMD-Vi).
fn read_unit(arch: Architecture, base: u64) -> Option<(UnitRegisters, u64, bool)> {
    let w = MmioWindow::map(base, 0x1000).ok()?;
    match arch {
        Architecture::Vtd => {
            let gsts = w.read32(VTD_GSTS) as u64;
            let regs = UnitRegisters::Vtd {
                version: w.read32(VTD_VER),
                cap: w.read64(VTD_CAP),
                ecap: w.read64(VTD_ECAP),
            };
            Some((regs, gsts, gsts & 1 << 31 != 0))
        }
        Architecture::AmdVi => {
            let control = w.read64(AMDVI_CONTROL);
            Some((UnitRegisters::AmdVi { efr: w.read64(AMDVI_EFR) }, control, control & 1 != 0))
        }
        Architecture::None => None,
    }
}

fn memory_lines(info: &BootInfo) -> Vec<String> {
    let mut out = alloc::vec![format!(
        "memory: {} MiB usable in {} regions (memory map from the {} loader)",
        info.usable_bytes() >> 20,
        info.memory_map().len(),
        info.protocol
    )];
    let reserved = info.memory_map().iter().filter(|r| r.kind != MemoryKind::Usable).count();
    out.push(format!(
        "memory: {reserved} firmware ranges (reserved, ACPI, NVS: listed in the memory map above)"
    ));
    out
}

fn acpi_line(acpi: &AcpiInfo) -> String {
    let names: Vec<&str> =
        acpi.signatures.iter().map(|s| core::str::from_utf8(s).unwrap_or("????")).collect();
    format!(
        "acpi: OEM \"{}\", tables {}",
        core::str::from_utf8(&acpi.oem_id).unwrap_or("?").trim_end(),
        names.join(" ")
    )
}

/// Runs the report; `Err` only when something it must say cannot be said (never for a
/// machine that simply has no IOMMU or no assignable device).
pub fn run(
    info: &BootInfo,
    acpi: &AcpiInfo,
    pci: &[PciFunction],
    json: bool,
) -> Result<(), String> {
    let console = crate::console::active().map(|c| match c.access {
        UartAccess::Port(p) => ConsoleAt::Port(p),
        UartAccess::Mmio { base, .. } => ConsoleAt::Mmio(base),
    });
    let facts = MachineFacts {
        functions: pci.iter().map(function).collect(),
        dmar: acpi.dmar,
        ivrs: acpi.ivrs,
        console,
        reserved_memory: Some(
            info.memory_map()
                .iter()
                .filter(|r| r.kind != MemoryKind::Usable && r.len > 0)
                .map(|r| MemRange { start: r.start, end: r.end() - 1 })
                .collect(),
        ),
        ioapic_ids: Some(acpi.ioapics.iter().map(|(id, _)| *id).collect()),
    };
    let a = assign::assess(&facts);
    let mut regs = Vec::new();
    let mut states = Vec::new();
    for u in &a.units {
        match read_unit(a.architecture, u.base) {
            Some((r, state, enabled)) => {
                regs.push((u.index, r));
                states.push((u.index, state, enabled));
            }
            None => log::warn!("report: unit {} at {:#x}: registers not mappable", u.index, u.base),
        }
    }
    let mut lines = cpu::lines(acpi.cpus);
    lines.extend(memory_lines(info));
    lines.push(acpi_line(acpi));
    if json {
        for l in &lines {
            let mut o = String::from("{\"type\":\"fact\",\"text\":");
            render::json_string(&mut o, l);
            o.push('}');
            println!("{o}");
        }
        for l in render::json_lines(&facts, &a, &regs) {
            println!("{l}");
        }
    } else {
        println!("==== machine report (mode=report: nothing is programmed) ====");
        lines.extend(render::report_lines(&facts, &a, &regs));
        for l in &lines {
            println!("{l}");
        }
        println!("{SKELETON_BEGIN}");
        for l in render::skeleton(&facts, &a) {
            println!("{l}");
        }
        println!("{SKELETON_END}");
    }
    // Checked from inside: the units are as firmware left them (translation off here,
    // since the hypervisor is the first to run after firmware).
    for (index, state, enabled) in &states {
        let (what, reg) = match a.architecture {
            Architecture::Vtd => ("GSTS", "translation enable (TES)"),
            _ => ("CONTROL", "IommuEn"),
        };
        log::info!(
            "report: unit {index} untouched: {what} {state:#x}, {reg} {}",
            if *enabled { "set (left on by firmware or an earlier loader)" } else { "clear" }
        );
    }
    log::info!(
        "report: done: {} of {} functions assignable; nothing was programmed",
        a.devices.iter().filter(|d| d.verdict.assignable()).count(),
        a.devices.len()
    );
    Ok(())
}
