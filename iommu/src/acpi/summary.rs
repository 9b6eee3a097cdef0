//! One-line-per-fact summaries of DMAR and IVRS tables for the boot log and bring-up.
//!
//! The format is stable (tests and the QEMU suites match on it); every line starts with
//! the structure and its index, e.g. `DRHD 0: base 0xfed90000 segment 0 ...`. See
//! docs/inspect-json.md ("Text summary") for the full grammar.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

use super::dmar::{
    Dmar, DmarStructure, ATSR_ALL_PORTS, DMAR_FLAG_DMA_CTRL_OPT_IN, DMAR_FLAG_INTR_REMAP,
    DMAR_FLAG_X2APIC_OPT_OUT, SATC_ATC_REQUIRED,
};
use super::error::Ascii;
use super::ivrs::{
    Ivmd, IvmdTarget, Ivrs, IvrsBlock, IVMD_EXCLUSION, IVMD_READ, IVMD_UNITY, IVMD_WRITE,
};
use super::ivrs_entry::{AcpiUid, SPECIAL_HPET, SPECIAL_IOAPIC};
use super::pci::Bdf;
use super::resolve::IvrsUnit;
use super::scope::{DeviceScope, DeviceScopes, ScopeKind};

/// A DMAR summary; `Display` writes its lines separated by newlines.
pub struct DmarSummary<'a, 'b>(pub &'b Dmar<'a>);

/// An IVRS summary; `Display` writes its lines separated by newlines.
pub struct IvrsSummary<'a, 'b>(pub &'b Ivrs<'a>);

impl fmt::Display for DmarSummary<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&dmar_summary(self.0).join("\n"))
    }
}

impl fmt::Display for IvrsSummary<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ivrs_summary(self.0).join("\n"))
    }
}

/// A scope's path as `bb:dd.f[/dd.f...]` (start bus, then each hop).
pub struct PathDisplay<'a, 'b>(pub &'b DeviceScope<'a>);

impl fmt::Display for PathDisplay<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:", self.0.start_bus)?;
        for (i, (d, func)) in self.0.path.hops().enumerate() {
            if i > 0 {
                f.write_char('/')?;
            }
            write!(f, "{d:02x}.{func:x}")?;
        }
        Ok(())
    }
}

fn flag_names(flags: u8, names: &[(u8, &str)]) -> String {
    let set: Vec<&str> =
        names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect();
    if set.is_empty() {
        String::new()
    } else {
        format!(" ({})", set.join(", "))
    }
}

fn scope_lines(out: &mut Vec<String>, prefix: &str, scopes: DeviceScopes<'_>) {
    for s in scopes {
        let mut line = format!("{prefix}: scope {}", s.kind.name());
        if let ScopeKind::Reserved(raw) = s.kind {
            let _ = write!(line, " type {raw:#x}");
        }
        if matches!(s.kind, ScopeKind::IoApic | ScopeKind::Hpet | ScopeKind::AcpiNamespace) {
            let _ = write!(line, " id {}", s.enumeration_id);
        }
        let _ = write!(line, " {}", PathDisplay(&s));
        if s.flags != 0 {
            let _ = write!(line, " flags {:#x}", s.flags);
        }
        out.push(line);
    }
}

/// The DMAR summary, one line per structure and per device scope.
pub fn dmar_summary(dmar: &Dmar<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let count = |k: u16| dmar.structures().filter(|s| s.kind() == k).count();
    out.push(format!(
        "DMAR: revision {}, host address width {} bits, flags {:#x}{}, {} DRHD, {} RMRR, {} ATSR, {} RHSA, {} ANDD, {} SATC, {} SIDP",
        dmar.header().revision,
        dmar.address_width_bits(),
        dmar.flags(),
        flag_names(
            dmar.flags(),
            &[
                (DMAR_FLAG_INTR_REMAP, "intr-remap"),
                (DMAR_FLAG_X2APIC_OPT_OUT, "x2apic-opt-out"),
                (DMAR_FLAG_DMA_CTRL_OPT_IN, "dma-ctrl-opt-in"),
            ]
        ),
        count(0),
        count(1),
        count(2),
        count(3),
        count(4),
        count(5),
        count(6),
    ));
    let mut index = [0usize; 7];
    let mut next = |k: usize| {
        let i = index.get(k).copied().unwrap_or(0);
        if let Some(slot) = index.get_mut(k) {
            *slot += 1;
        }
        i
    };
    for s in dmar.structures() {
        match s {
            DmarStructure::Drhd(d) => {
                let p = format!("DRHD {}", next(0));
                let n = d.scopes.clone().count();
                out.push(format!(
                    "{p}: base {:#x} segment {} size {}KiB flags {:#x}{} scopes {n}",
                    d.base,
                    d.segment,
                    d.register_size() / 1024,
                    d.flags,
                    if d.include_pci_all() { " include-pci-all" } else { "" },
                ));
                scope_lines(&mut out, &p, d.scopes);
            }
            DmarStructure::Rmrr(r) => {
                let p = format!("RMRR {}", next(1));
                let n = r.scopes.clone().count();
                out.push(format!(
                    "{p}: range {:#x}-{:#x} segment {} scopes {n}",
                    r.base, r.limit, r.segment
                ));
                scope_lines(&mut out, &p, r.scopes);
            }
            DmarStructure::Atsr(a) => {
                let p = format!("ATSR {}", next(2));
                let n = a.scopes.clone().count();
                out.push(format!(
                    "{p}: segment {} flags {:#x}{} scopes {n}",
                    a.segment,
                    a.flags,
                    if a.flags & ATSR_ALL_PORTS != 0 { " all-ports" } else { "" }
                ));
                scope_lines(&mut out, &p, a.scopes);
            }
            DmarStructure::Rhsa(r) => out.push(format!(
                "RHSA {}: base {:#x} proximity domain {}",
                next(3),
                r.base,
                r.proximity_domain
            )),
            DmarStructure::Andd(a) => out.push(format!(
                "ANDD {}: device number {} name {:?}",
                next(4),
                a.device_number,
                Ascii(a.name)
            )),
            DmarStructure::Satc(s) => {
                let p = format!("SATC {}", next(5));
                let n = s.scopes.clone().count();
                out.push(format!(
                    "{p}: segment {} flags {:#x}{} scopes {n}",
                    s.segment,
                    s.flags,
                    if s.flags & SATC_ATC_REQUIRED != 0 { " atc-required" } else { "" }
                ));
                scope_lines(&mut out, &p, s.scopes);
            }
            DmarStructure::Sidp(s) => {
                let p = format!("SIDP {}", next(6));
                let n = s.scopes.clone().count();
                out.push(format!("{p}: segment {} scopes {n}", s.segment));
                scope_lines(&mut out, &p, s.scopes);
            }
            DmarStructure::Unknown { kind, offset, length } => out.push(format!(
                "DMAR: unknown structure type {kind:#x} at {offset:#x} length {length} skipped"
            )),
        }
    }
    out
}

fn devices(first: u16, last: u16) -> String {
    if first == last {
        format!("device {}", Bdf::from_id(first))
    } else {
        format!("devices {}-{}", Bdf::from_id(first), Bdf::from_id(last))
    }
}

fn uid_text(uid: &AcpiUid<'_>) -> String {
    match uid {
        AcpiUid::None => String::from("none"),
        AcpiUid::Integer(b) => match uid.integer() {
            Some(v) => format!("{v:#x}"),
            None => format!("integer of {} bytes", b.len()),
        },
        AcpiUid::String(b) => format!("{:?}", Ascii(b)),
        AcpiUid::Other { format, bytes } => format!("format {format} ({} bytes)", bytes.len()),
    }
}

fn ivhd_lines(out: &mut Vec<String>, unit: &IvrsUnit<'_>) {
    let p = format!("IVHD {}", unit.index);
    // Merge the resolved facts back into table order.
    let mut lines: Vec<(usize, String)> = Vec::new();
    for r in &unit.ranges {
        let mut l = format!("{p}: {} data {:#x}", devices(r.first, r.last), r.data);
        if let Some(a) = r.alias {
            let _ = write!(l, " alias {}", Bdf::from_id(a));
        }
        if let Some(e) = r.ext {
            let _ = write!(l, " ext {e:#x}");
        }
        lines.push((r.offset, l));
    }
    for s in &unit.specials {
        let what = match s.variety {
            SPECIAL_IOAPIC => String::from("ioapic"),
            SPECIAL_HPET => String::from("hpet"),
            v => format!("special variety {v}"),
        };
        lines.push((
            s.offset,
            format!(
                "{p}: {what} {} devid {} data {:#x}",
                s.handle,
                Bdf::from_id(s.device_id),
                s.data
            ),
        ));
    }
    for h in &unit.hids {
        lines.push((
            h.offset,
            format!(
                "{p}: acpi-hid {:?} uid {} devid {}",
                Ascii(&h.hid),
                uid_text(&h.uid),
                Bdf::from_id(h.device_id)
            ),
        ));
    }
    lines.sort_by_key(|(o, _)| *o);
    out.extend(lines.into_iter().map(|(_, l)| l));
    for problem in &unit.problems {
        out.push(format!("{p}: bad entries: {problem}"));
    }
}

fn ivmd_line(index: usize, m: &Ivmd) -> String {
    let target = match m.target() {
        IvmdTarget::All => String::from("devices all"),
        IvmdTarget::Device(d) => devices(d, d),
        IvmdTarget::Range(a, b) => devices(a, b),
    };
    format!(
        "IVMD {index}: type {:#x} {target} range {:#x}+{:#x} flags {:#x}{}",
        m.kind,
        m.start,
        m.size,
        m.flags,
        flag_names(
            m.flags,
            &[
                (IVMD_UNITY, "unity"),
                (IVMD_READ, "read"),
                (IVMD_WRITE, "write"),
                (IVMD_EXCLUSION, "exclusion"),
            ]
        )
    )
}

/// The IVRS summary, one line per block and per (resolved) device entry.
pub fn ivrs_summary(ivrs: &Ivrs<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let info = ivrs.ivinfo();
    let preferred = ivrs.preferred_ivhd_type();
    out.push(format!(
        "IVRS: revision {}, ivinfo {:#x} (va {} bits, pa {} bits, gva-size {}{}{}), {} IVHD{}, {} IVMD",
        ivrs.header().revision,
        info.0,
        info.va_size(),
        info.pa_size(),
        info.gva_size(),
        if info.efr_supported() { ", efr-sup" } else { "" },
        if info.dma_remap_required() { ", dma-remap" } else { "" },
        ivrs.ivhds().count(),
        match preferred {
            Some(t) => format!(" (using type {t:#x})"),
            None => String::new(),
        },
        ivrs.ivmds().count(),
    ));
    let (mut ivhd, mut ivmd) = (0usize, 0usize);
    for b in ivrs.blocks() {
        match b {
            IvrsBlock::Hardware(h) => {
                let unit = IvrsUnit::new(ivhd, &h);
                ivhd += 1;
                let mut l = format!(
                    "IVHD {}: type {:#x} base {:#x} segment {} devid {} cap {:#x} flags {:#x} info {:#x} attributes {:#x}",
                    unit.index,
                    h.kind,
                    h.base,
                    h.segment,
                    Bdf::from_id(h.device_id),
                    h.capability_offset,
                    h.flags,
                    h.info,
                    h.attributes
                );
                if let Some(efr) = h.efr {
                    let _ = write!(l, " efr {efr:#x}");
                }
                if Some(h.kind) != preferred {
                    l.push_str(" superseded");
                }
                out.push(l);
                ivhd_lines(&mut out, &unit);
            }
            IvrsBlock::Memory(m) => {
                out.push(ivmd_line(ivmd, &m));
                ivmd += 1;
            }
            IvrsBlock::Unknown { kind, offset, length } => out.push(format!(
                "IVRS: unknown block type {kind:#x} at {offset:#x} length {length} skipped"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests;
