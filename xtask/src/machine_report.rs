//! `cargo xtask inspect --machine [DIR] [--json]`: the hypervisor's `mode=report` from a
//! running Linux: the same verdicts and configuration skeleton ([`iommu::assign`]), from
//! sysfs instead of the hardware (so CAP/ECAP cannot be read; AMD-Vi EFR comes from the
//! IVHD where the table carries it). DIR is a recorded tree (`--record DIR` writes one).

use crate::sysfs::{self, Machine};
use iommu::assign::render::{json_lines, json_string, report_lines, skeleton};
use iommu::assign::{assess, ConsoleAt, MachineFacts};
use std::path::Path;

/// The report's first lines: the processor (from /proc/cpuinfo) and the tables found.
fn facts_lines(m: &Machine) -> Vec<String> {
    let mut out = Vec::new();
    match &m.cpu {
        Some((vendor, model, flags)) => {
            let has = |f: &str| if flags.iter().any(|x| x == f) { "yes" } else { "no" };
            out.push(format!("cpu: {vendor} \"{model}\""));
            out.push(format!("cpu: AMD SVM: {}, nested paging (NPT): {}", has("svm"), has("npt")));
            out.push(format!("cpu: Intel VMX: {}, EPT: {}", has("vmx"), has("ept")));
            out.push(
                "cpu: (a flag Linux does not show may be switched off in firmware: check the setup menu)"
                    .into(),
            );
        }
        None => out.push("cpu: no /proc/cpuinfo in this tree".into()),
    }
    let tables: Vec<&str> = [("DMAR", &m.dmar), ("IVRS", &m.ivrs), ("SPCR", &m.spcr)]
        .iter()
        .filter(|(_, t)| t.is_some())
        .map(|(n, _)| *n)
        .collect();
    out.push(format!(
        "acpi: {} (of DMAR IVRS SPCR); {} PCI functions",
        if tables.is_empty() { "none".to_string() } else { tables.join(" ") },
        m.functions.len()
    ));
    out
}

/// The console the hypervisor would pick by default on this machine: SPCR's UART, else
/// COM1 (a PCI serial card holding it cannot be assigned).
fn console(m: &Machine) -> ConsoleAt {
    let uart = m.spcr.as_deref().and_then(|t| boot::console::parse_spcr(t).ok());
    match uart.map(|u| u.access) {
        Some(boot::console::UartAccess::Mmio { base, .. }) => ConsoleAt::Mmio(base),
        Some(boot::console::UartAccess::Port(p)) => ConsoleAt::Port(p),
        None => ConsoleAt::Port(0x3F8),
    }
}

/// The report for the machine below `root`, as lines (text or JSON).
pub fn report(root: &Path, json: bool) -> Result<Vec<String>, String> {
    let m = sysfs::read(root)?;
    let facts = MachineFacts {
        functions: m.functions.clone(),
        dmar: m.dmar.as_deref(),
        ivrs: m.ivrs.as_deref(),
        console: Some(console(&m)),
        reserved_memory: None,
        ioapic_ids: None,
    };
    let a = assess(&facts);
    let mut out = Vec::new();
    let mut head = facts_lines(&m);
    head.extend(m.warnings.iter().map(|w| format!("sysfs: {w}")));
    if json {
        for l in head {
            let mut o = String::from("{\"type\":\"fact\",\"text\":");
            json_string(&mut o, &l);
            o.push('}');
            out.push(o);
        }
        out.extend(json_lines(&facts, &a, &[]));
    } else {
        out.push(format!(
            "==== machine report for {} (nothing is programmed) ====",
            root.display()
        ));
        out.extend(head);
        out.extend(report_lines(&facts, &a, &[]));
        out.push("---- configuration skeleton ----".into());
        out.extend(skeleton(&facts, &a));
        out.push("---- end of configuration skeleton ----".into());
    }
    Ok(out)
}
