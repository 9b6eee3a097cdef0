//! The assessment as people and programs read it: report lines, JSON lines (schema in
//! docs/report-json.md) and a partition configuration skeleton that the configuration
//! parser accepts.

use super::{Architecture, Assessment, Function, MachineFacts, Verdict};
use crate::acpi::pci::MemRange;
use crate::amdvi::Efr;
use crate::vtd::{regs, Cap, Ecap};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// QEMU's edu DMA test device: the only one the built-in guest drives.
pub const EDU: (u16, u16) = (0x1234, 0x11e8);
/// Partitions a configuration may hold (the configuration parser's limit).
pub const MAX_PARTITIONS: usize = 4;
/// Guest memory the skeleton gives each partition.
pub const SKELETON_MEMORY: &str = "64M";

/// A unit's registers, when whoever looked could read them (the kernel can, sysfs cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitRegisters {
    /// VT-d: VER, CAP, ECAP.
    Vtd {
        /// Version register.
        version: u32,
        /// Capability register.
        cap: u64,
        /// Extended capability register.
        ecap: u64,
    },
    /// AMD-Vi: the extended feature register.
    AmdVi {
        /// EFR.
        efr: u64,
    },
}

fn arch_prefix(a: Architecture) -> &'static str {
    match a {
        Architecture::Vtd => "DMAR",
        Architecture::AmdVi => "AMD-Vi",
        Architecture::None => "IOMMU",
    }
}

fn registers_of(regs: &[(usize, UnitRegisters)], index: usize) -> Option<UnitRegisters> {
    regs.iter().find(|(i, _)| *i == index).map(|(_, r)| *r)
}

/// One line per function: address, ids, class in words, translation, group, verdict.
pub fn device_line(f: &Function, a: &Assessment, i: usize) -> String {
    let d = &a.devices[i];
    let route = match d.translation {
        Some(t) => format!("unit {} requester id {:#06x}", t.unit, t.requester_id),
        None => String::from("no IOMMU unit"),
    };
    // ACS matters on PCIe ports (root, switch up/downstream): without it, devices below
    // may reach each other without the IOMMU seeing it.
    let acs = match (f.acs, f.pcie_type) {
        (Some(cap), _) => format!(", ACS {}", super::acs_words(cap)),
        (None, Some(4..=6)) => String::from(", no ACS"),
        _ => String::new(),
    };
    format!(
        "{} {:04x}:{:04x} {} [{:02x}{:02x}{:02x}], {route}, group {}{acs}: {}",
        f.address(),
        f.vendor,
        f.device,
        super::class_name(f.class.0, f.class.1),
        f.class.0,
        f.class.1,
        f.class.2,
        d.group,
        d.verdict.words()
    )
}

/// The report's IOMMU and device sections, one fact per line, with Linux's prefixes
/// (`DMAR:`, `DMAR-IR:`, `AMD-Vi:`) where Linux has one, and `assign:` for verdicts.
pub fn report_lines(
    facts: &MachineFacts<'_>,
    a: &Assessment,
    regs: &[(usize, UnitRegisters)],
) -> Vec<String> {
    let mut out = Vec::new();
    let p = arch_prefix(a.architecture);
    match a.architecture {
        Architecture::None => out.push("IOMMU: no DMAR or IVRS table: no IOMMU".into()),
        Architecture::Vtd => {
            out.push(format!("DMAR: Intel VT-d, {} remapping units", a.units.len()))
        }
        Architecture::AmdVi => out.push(format!("AMD-Vi: {} IOMMU units", a.units.len())),
    }
    for u in &a.units {
        out.push(format!(
            "{p}: unit {} at {:#x} segment {}{}{}",
            u.index,
            u.base,
            u.segment,
            if u.include_all { ", includes every other device of its segment" } else { "" },
            if u.usable { "" } else { ", UNUSABLE (firmware bug, see warnings)" }
        ));
        match registers_of(regs, u.index) {
            Some(UnitRegisters::Vtd { version, cap, ecap }) => {
                for l in regs::describe(version, Cap(cap), Ecap(ecap)) {
                    out.push(format!("{p}: unit {}:   {l}", u.index));
                }
            }
            Some(UnitRegisters::AmdVi { efr }) => out.push(format!(
                "{p}: unit {}:   EFR {efr:#018x}: {}",
                u.index,
                Efr(efr).words().join(", ")
            )),
            None => match u.efr_from_table {
                Some(efr) => out.push(format!(
                    "{p}: unit {}:   EFR (IVHD image) {efr:#018x}: {}",
                    u.index,
                    Efr(efr).words().join(", ")
                )),
                None => out.push(format!(
                    "{p}: unit {}:   capability registers not read (only the ACPI table is known)",
                    u.index
                )),
            },
        }
    }
    out.extend(interrupt_remapping(a, regs));
    for r in &a.reserved {
        let MemRange { start, end } = r.range;
        out.push(format!("{p}: {} region {start:#x}-{end:#x} (firmware-reserved, devices using it cannot be assigned)", r.source));
    }
    for w in &a.warnings {
        out.push(format!("{p}: {w}"));
    }
    for (i, f) in facts.functions.iter().enumerate() {
        out.push(format!("assign: {}", device_line(f, a, i)));
    }
    let n = a.devices.iter().filter(|d| d.verdict.assignable()).count();
    out.push(format!("assign: {n} of {} functions assignable", a.devices.len()));
    out
}

fn interrupt_remapping(a: &Assessment, regs: &[(usize, UnitRegisters)]) -> Vec<String> {
    let mut out = Vec::new();
    match a.architecture {
        Architecture::None => {}
        Architecture::Vtd => {
            let flags = a.dmar_flags.unwrap_or(0);
            let units: Vec<String> = a
                .units
                .iter()
                .filter_map(|u| match registers_of(regs, u.index) {
                    Some(UnitRegisters::Vtd { ecap, .. }) => Some(format!(
                        "unit {} {}",
                        u.index,
                        if Ecap(ecap).interrupt_remapping() { "yes" } else { "no" }
                    )),
                    _ => None,
                })
                .collect();
            out.push(format!(
                "DMAR-IR: firmware {} interrupt remapping (DMAR INTR_REMAP flag){}; x2APIC opt-out {}{}",
                if flags & 1 != 0 { "supports" } else { "does not declare" },
                if units.is_empty() { String::new() } else { format!(", ECAP.IR: {}", units.join(", ")) },
                if flags & 2 != 0 { "set" } else { "clear" },
                if flags & 1 != 0 { "" } else { " (interrupts from assigned devices could not be confined)" }
            ));
        }
        Architecture::AmdVi => {
            let (ioapics, hpets) = a.ivrs_specials.unwrap_or((0, 0));
            out.push(format!(
                "AMD-Vi: interrupt remapping: every AMD-Vi unit remaps interrupts; the IVHDs list {ioapics} I/O APIC and {hpets} HPET entries{}",
                if ioapics == 0 { " (none for an I/O APIC: Linux would refuse interrupt remapping)" } else { "" }
            ));
        }
    }
    out
}

/// A partition name for function `f` (1-16 of a-z 0-9 _ -).
fn partition_name(f: &Function) -> String {
    if f.segment == 0 {
        format!("dev-{:02x}-{:02x}-{}", f.bdf.bus, f.bdf.device, f.bdf.function)
    } else {
        format!("dev-{:04x}-{:02x}-{:02x}-{}", f.segment, f.bdf.bus, f.bdf.device, f.bdf.function)
    }
}

/// A configuration that would partition this machine: one partition per assignable
/// function (at most [`MAX_PARTITIONS`]). Edu devices get the built-in guest and are
/// written out as they are, so the skeleton boots as it stands; any other device needs a
/// guest the user provides, so its partition is written commented out (`#! ` before each
/// line) with `image module:guest.elf`: remove the `#! ` and name the guest module.
/// Every line, once uncommented, is one the configuration parser accepts.
pub fn skeleton(facts: &MachineFacts<'_>, a: &Assessment) -> Vec<String> {
    let mut out = Vec::new();
    out.push(
        "# partition configuration skeleton (boot module NAME.cfg), generated by the report".into(),
    );
    let assignable: Vec<&Function> = a
        .devices
        .iter()
        .filter(|d| d.verdict.assignable())
        .filter_map(|d| facts.functions.get(d.function))
        .collect();
    if assignable.is_empty() {
        out.push("# no function of this machine can be assigned: see the verdicts above".into());
    }
    if assignable.iter().any(|f| (f.vendor, f.device) != EDU) {
        out.push(
            "# partitions marked `#! ` need a guest of your own (the built-in guest drives only"
                .into(),
        );
        out.push("# QEMU's edu, 1234:11e8): remove the `#! ` and pass the guest as boot module guest.elf".into());
    }
    for f in assignable.iter().take(MAX_PARTITIONS) {
        let edu = (f.vendor, f.device) == EDU;
        let mark = if edu { "" } else { "#! " };
        out.push(format!(
            "{mark}partition {}    # {:04x}:{:04x} {}",
            partition_name(f),
            f.vendor,
            f.device,
            super::class_name(f.class.0, f.class.1)
        ));
        out.push(format!("{mark}  memory {SKELETON_MEMORY}"));
        out.push(format!("{mark}  image {}", if edu { "builtin" } else { "module:guest.elf" }));
        out.push(format!(
            "{mark}  device {:04x}:{:02x}:{:02x}.{}",
            f.segment, f.bdf.bus, f.bdf.device, f.bdf.function
        ));
    }
    for f in assignable.iter().skip(MAX_PARTITIONS) {
        out.push(format!(
            "# also assignable ({MAX_PARTITIONS} partitions at most): {} {:04x}:{:04x}",
            f.address(),
            f.vendor,
            f.device
        ));
    }
    out
}

/// Appends `s` to `out` as a JSON string (quotes, backslashes and control characters
/// escaped).
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn field(out: &mut String, key: &str, value: &str) {
    out.push(',');
    json_string(out, key);
    out.push(':');
    json_string(out, value);
}

fn object(kind: &str) -> String {
    let mut o = String::from("{\"type\":");
    json_string(&mut o, kind);
    o
}

/// The report as JSON lines: one object per unit, reserved region, warning, device and
/// skeleton line, then a `summary` object (docs/report-json.md).
pub fn json_lines(
    facts: &MachineFacts<'_>,
    a: &Assessment,
    regs: &[(usize, UnitRegisters)],
) -> Vec<String> {
    let mut out = Vec::new();
    let arch = match a.architecture {
        Architecture::None => "none",
        Architecture::Vtd => "vt-d",
        Architecture::AmdVi => "amd-vi",
    };
    for u in &a.units {
        let mut o = object("unit");
        o.push_str(&format!(",\"index\":{}", u.index));
        field(&mut o, "architecture", arch);
        field(&mut o, "base", &format!("{:#x}", u.base));
        o.push_str(&format!(",\"segment\":{},\"usable\":{}", u.segment, u.usable));
        match registers_of(regs, u.index) {
            Some(UnitRegisters::Vtd { version, cap, ecap }) => {
                field(&mut o, "version", &format!("{}.{}", (version >> 4) & 0xF, version & 0xF));
                field(&mut o, "cap", &format!("{cap:#018x}"));
                field(&mut o, "ecap", &format!("{ecap:#018x}"));
            }
            Some(UnitRegisters::AmdVi { efr }) => field(&mut o, "efr", &format!("{efr:#018x}")),
            None => {
                if let Some(efr) = u.efr_from_table {
                    field(&mut o, "efr", &format!("{efr:#018x}"));
                }
            }
        }
        o.push('}');
        out.push(o);
    }
    for r in &a.reserved {
        let mut o = object("reserved");
        field(&mut o, "source", r.source);
        field(&mut o, "start", &format!("{:#x}", r.range.start));
        field(&mut o, "end", &format!("{:#x}", r.range.end));
        o.push('}');
        out.push(o);
    }
    for w in &a.warnings {
        let mut o = object("warning");
        field(&mut o, "text", w);
        o.push('}');
        out.push(o);
    }
    for (i, f) in facts.functions.iter().enumerate() {
        let d = &a.devices[i];
        let mut o = object("device");
        field(&mut o, "address", &f.address());
        field(&mut o, "vendor", &format!("{:04x}", f.vendor));
        field(&mut o, "device", &format!("{:04x}", f.device));
        field(&mut o, "class", &format!("{:02x}{:02x}{:02x}", f.class.0, f.class.1, f.class.2));
        field(&mut o, "class_name", super::class_name(f.class.0, f.class.1));
        match d.translation {
            Some(t) => o.push_str(&format!(
                ",\"unit\":{},\"requester_id\":\"{:#06x}\"",
                t.unit, t.requester_id
            )),
            None => o.push_str(",\"unit\":null,\"requester_id\":null"),
        }
        o.push_str(&format!(",\"group\":{}", d.group));
        if let Some(cap) = f.acs {
            o.push_str(&format!(",\"acs\":\"{cap:#06x}\""));
        }
        field(&mut o, "verdict", d.verdict.key());
        field(&mut o, "reason", &d.verdict.words());
        if let Verdict::SharesGroup(others) = &d.verdict {
            o.push_str(",\"group_with\":[");
            for (k, other) in others.iter().enumerate() {
                if k > 0 {
                    o.push(',');
                }
                json_string(&mut o, other);
            }
            o.push(']');
        }
        o.push('}');
        out.push(o);
    }
    for line in skeleton(facts, a) {
        let mut o = object("skeleton");
        field(&mut o, "line", &line);
        o.push('}');
        out.push(o);
    }
    let mut o = object("summary");
    field(&mut o, "architecture", arch);
    o.push_str(&format!(
        ",\"functions\":{},\"assignable\":{}}}",
        a.devices.len(),
        a.devices.iter().filter(|d| d.verdict.assignable()).count()
    ));
    out.push(o);
    out
}
