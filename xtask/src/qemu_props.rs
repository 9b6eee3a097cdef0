//! Every property of the emulated IOMMU the suites rely on, stated on the command line
//! instead of inherited: QEMU changes defaults between releases (intel-iommu's `aw-bits`
//! is 39 on 7.2 and 48 on 10.0), so a machine left to defaults is a different machine on
//! each version.
//!
//! Properties both versions have are always given. A property only newer versions have
//! (amd-iommu `xtsup`, `dma-remap`; intel-iommu `x-flts`, `fs1gp`, `stale-tm`) is given when the QEMU
//! that runs lists it in `-device NAME,help`, set to the behaviour the older version has.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::qemu::{Iommu, DEFAULT_AW_BITS};

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Property names per (QEMU binary, device name).
type PropertyCache = HashMap<(PathBuf, String), Vec<String>>;

/// The property names `binary` lists for `device` (asked once per binary and device).
fn properties(binary: &Path, device: &str) -> Result<Vec<String>, String> {
    static CACHE: Mutex<Option<PropertyCache>> = Mutex::new(None);
    let key = (binary.to_path_buf(), device.to_string());
    if let Some(found) =
        CACHE.lock().ok().and_then(|c| c.as_ref().and_then(|m| m.get(&key).cloned()))
    {
        return Ok(found);
    }
    let out = Command::new(binary)
        .args(["-machine", "q35", "-nodefaults", "-display", "none", "-device"])
        .arg(format!("{device},help"))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().split_once('=').map(|(name, _)| name.to_string()))
        .collect();
    if names.is_empty() {
        return Err(format!("{} lists no properties for {device}", binary.display()));
    }
    if let Ok(mut c) = CACHE.lock() {
        c.get_or_insert_with(HashMap::new).insert(key, names.clone());
    }
    Ok(names)
}

/// The `-device` value for `iommu` on the QEMU at `binary`, every property stated.
///
/// intel-iommu: legacy (not scalable) mode, second-level tables of `aw-bits`, interrupt
/// remapping on without extended interrupt mode (TCG has no in-kernel irqchip, so `auto`
/// means off), pass-through support advertised, no device-IOTLB, snooping or stale-TM.
///
/// amd-iommu: `pt=off` is essential on QEMU 10.0: with `pt=on` that version gives every
/// device an address space that bypasses the IOMMU (DMA goes straight to memory whatever
/// the device table says, see docs/architecture.md, "QEMU versions"). No device-IOTLB,
/// and no x2APIC (`xtsup`) interrupt format.
pub fn iommu_device(iommu: &Iommu, binary: &Path) -> Result<String, String> {
    let (name, mut props): (&str, Vec<(&str, String)>) = match iommu {
        Iommu::None => return Err("no IOMMU device to describe".into()),
        Iommu::Intel { aw_bits, caching_mode } => (
            "intel-iommu",
            vec![
                ("intremap", "on".into()),
                ("eim", "off".into()),
                ("aw-bits", aw_bits.unwrap_or(DEFAULT_AW_BITS).to_string()),
                ("caching-mode", on_off(*caching_mode).into()),
                ("device-iotlb", "off".into()),
                ("dma-drain", "on".into()),
                ("dma-translation", "on".into()),
                ("pt", "on".into()),
                ("snoop-control", "off".into()),
                ("x-scalable-mode", "off".into()),
                ("x-pasid-mode", "off".into()),
            ],
        ),
        Iommu::Amd { intremap } => (
            "amd-iommu",
            vec![
                ("intremap", on_off(*intremap).into()),
                ("pt", "off".into()),
                ("device-iotlb", "off".into()),
            ],
        ),
    };
    // Newer properties, at the value that keeps the older versions' behaviour.
    let newer: &[(&str, &str)] = match iommu {
        Iommu::Intel { .. } => &[("x-flts", "off"), ("fs1gp", "on"), ("stale-tm", "off")],
        // Releases after 10.0 translate only with `dma-remap=on` (off: every device in
        // pass-through whatever its DTE says).
        _ => &[("xtsup", "off"), ("dma-remap", "on")],
    };
    let known = properties(binary, name)?;
    for (prop, value) in newer {
        if known.iter().any(|k| k == prop) {
            props.push((prop, (*value).into()));
        }
    }
    if let Some((missing, _)) = props.iter().find(|(p, _)| !known.iter().any(|k| k == p)) {
        return Err(format!("{} has no {name} property `{missing}`", binary.display()));
    }
    let mut dev = String::from(name);
    for (prop, value) in props {
        dev.push_str(&format!(",{prop}={value}"));
    }
    Ok(dev)
}

/// The machine and IOMMU arguments of a command line, for the log's first lines.
pub fn describe(args: &[String]) -> String {
    let mut parts = Vec::new();
    for pair in args.windows(2) {
        let value = &pair[1];
        let iommu = value.starts_with("intel-iommu") || value.starts_with("amd-iommu");
        if pair[0] == "-machine" || pair[0] == "-device" && iommu {
            parts.push(format!("{} {value}", pair[0]));
        }
    }
    if !args.iter().any(|a| a.starts_with("intel-iommu") || a.starts_with("amd-iommu")) {
        parts.push("(no IOMMU)".into());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_property_is_stated_on_the_system_qemu() {
        let qemu = std::path::PathBuf::from("qemu-system-x86_64");
        // `cargo xtask test` installs it before the host tests run.
        crate::qemu_versions::version_of(&qemu).expect("the system QEMU");
        let intel = iommu_device(&Iommu::Intel { aw_bits: None, caching_mode: true }, &qemu)
            .expect("intel-iommu");
        for p in ["aw-bits=39", "caching-mode=on", "intremap=on", "eim=off", "x-scalable-mode=off"]
        {
            assert!(intel.contains(p), "{intel}");
        }
        let amd = iommu_device(&Iommu::Amd { intremap: false }, &qemu).expect("amd-iommu");
        assert!(amd.starts_with("amd-iommu,intremap=off,pt=off"), "{amd}");
    }

    #[test]
    fn describe_names_the_machine_and_the_iommu() {
        let args: Vec<String> =
            ["-machine", "q35", "-device", "amd-iommu,pt=off", "-device", "edu,addr=0x4"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        assert_eq!(describe(&args), "-machine q35 -device amd-iommu,pt=off");
        let none: Vec<String> = ["-machine", "q35"].iter().map(|s| s.to_string()).collect();
        assert_eq!(describe(&none), "-machine q35 (no IOMMU)");
    }
}
