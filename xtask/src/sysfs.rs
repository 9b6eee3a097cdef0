//! A Linux machine as `inspect --machine` sees it: /sys/firmware/acpi/tables (DMAR, IVRS,
//! SPCR), /sys/bus/pci/devices (ids, class, BARs from `resource`, bridge buses and the
//! PCI Express port type from `config`) and /proc/cpuinfo, under a root directory (`/`
//! for this machine, or a tree recorded with `--record`). Every file is untrusted: a
//! missing or malformed one is a warning, never a panic.

use iommu::acpi::pci::Bdf;
use iommu::assign::{BarInfo, Function, PCIE_TO_PCI_BRIDGE};
use std::fs;
use std::path::{Path, PathBuf};

/// Where each piece lives below the root.
pub const TABLES: &str = "sys/firmware/acpi/tables";
/// PCI functions, one directory each (`SSSS:BB:DD.F`).
pub const PCI_DEVICES: &str = "sys/bus/pci/devices";
/// The files of a PCI function directory that are read (and recorded).
pub const PCI_FILES: [&str; 5] = ["vendor", "device", "class", "resource", "config"];
/// Tables read (and recorded).
pub const TABLE_NAMES: [&str; 3] = ["DMAR", "IVRS", "SPCR"];
const CPUINFO: &str = "proc/cpuinfo";

/// What was read from a machine.
#[derive(Debug, Default)]
pub struct Machine {
    /// Every PCI function, in address order.
    pub functions: Vec<Function>,
    /// Raw DMAR bytes.
    pub dmar: Option<Vec<u8>>,
    /// Raw IVRS bytes.
    pub ivrs: Option<Vec<u8>>,
    /// Raw SPCR bytes (the console the hypervisor would choose by default).
    pub spcr: Option<Vec<u8>>,
    /// The first processor of /proc/cpuinfo: vendor, model name, flags.
    pub cpu: Option<(String, String, Vec<String>)>,
    /// What could not be read, one line each.
    pub warnings: Vec<String>,
}

fn hex(text: &str) -> Option<u64> {
    let t = text.trim();
    u64::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

/// Parses a sysfs PCI directory name `SSSS:BB:DD.F`.
pub fn parse_address(name: &str) -> Option<(u16, Bdf)> {
    let (seg, rest) = name.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (dev, func) = rest.split_once('.')?;
    let seg = u16::from_str_radix(seg, 16).ok()?;
    let bus = u8::from_str_radix(bus, 16).ok()?;
    let dev = u8::from_str_radix(dev, 16).ok()?;
    let func = func.parse::<u8>().ok()?;
    Some((seg, Bdf::new(bus, dev, func)?))
}

/// BARs from a `resource` file: the first six lines, `start end flags` in hex
/// (IORESOURCE_IO 0x100, IORESOURCE_MEM 0x200); unimplemented BARs are all zeros.
pub fn parse_resource(text: &str) -> Vec<BarInfo> {
    let mut bars = Vec::new();
    for (slot, line) in text.lines().take(6).enumerate() {
        let v: Vec<u64> = line.split_whitespace().filter_map(hex).collect();
        let [start, end, flags] = v[..] else { continue };
        if end <= start || flags & 0x300 == 0 {
            continue;
        }
        bars.push(BarInfo {
            slot: slot as u8,
            memory: flags & 0x200 != 0,
            base: start,
            size: end - start + 1,
        });
    }
    bars
}

/// From configuration-space bytes (64 for users, 256 or 4096 for root): the bridge's
/// secondary and subordinate bus (header type 1), and the PCI Express device/port type
/// (capability 0x10, list followed with a bound).
pub fn parse_config(config: &[u8]) -> (Option<(u8, u8)>, Option<u8>) {
    let byte = |i: usize| config.get(i).copied();
    let bridge = match byte(0x0E) {
        Some(h) if h & 0x7F == 1 => byte(0x19).zip(byte(0x1A)),
        _ => None,
    };
    let mut pcie = None;
    if byte(0x06).is_some_and(|s| s & 0x10 != 0) {
        let mut ptr = byte(0x34).unwrap_or(0) as usize & 0xFC;
        for _ in 0..48 {
            if ptr < 0x40 {
                break;
            }
            let (Some(id), Some(next), Some(reg)) = (byte(ptr), byte(ptr + 1), byte(ptr + 2))
            else {
                break;
            };
            if id == 0x10 {
                pcie = Some(reg >> 4);
                break;
            }
            ptr = next as usize & 0xFC;
        }
    }
    (bridge, pcie)
}

fn read_text(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_function(dir: &Path, seg: u16, bdf: Bdf, warnings: &mut Vec<String>) -> Option<Function> {
    let mut id = |name: &str| -> Option<u64> {
        match read_text(&dir.join(name)).map(|t| hex(&t)) {
            Ok(Some(v)) => Some(v),
            Ok(None) => {
                warnings.push(format!("{}/{name}: not a hex number", dir.display()));
                None
            }
            Err(e) => {
                warnings.push(e);
                None
            }
        }
    };
    let vendor = id("vendor")? as u16;
    let device = id("device")? as u16;
    let class = id("class")? as u32;
    let bars =
        fs::read_to_string(dir.join("resource")).map(|t| parse_resource(&t)).unwrap_or_default();
    let config = fs::read(dir.join("config")).unwrap_or_default();
    let (bridge, pcie_type) = parse_config(&config);
    if config.len() < 0x40 {
        warnings.push(format!(
            "{}/config: {} bytes, bridge buses unknown",
            dir.display(),
            config.len()
        ));
    } else if config.len() <= 0x40 && class >> 16 == 0x06 {
        warnings.push(format!(
            "{}: only 64 bytes of configuration space readable (run as root): the PCIe port type is unknown",
            dir.display()
        ));
    }
    Some(Function {
        segment: seg,
        bdf,
        vendor,
        device,
        class: ((class >> 16) as u8, (class >> 8) as u8, class as u8),
        bridge,
        pcie_type,
        bars,
        acs: iommu::assign::find_acs(|off| {
            let at = off as usize;
            config.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }),
    })
}

fn read_cpu(root: &Path) -> Option<(String, String, Vec<String>)> {
    let text = fs::read_to_string(root.join(CPUINFO)).ok()?;
    let first = text.split("\n\n").next()?;
    let get = |key: &str| {
        first.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    let flags = get("flags").unwrap_or_default().split_whitespace().map(String::from).collect();
    Some((get("vendor_id")?, get("model name").unwrap_or_default(), flags))
}

/// Reads the machine below `root`.
pub fn read(root: &Path) -> Result<Machine, String> {
    let mut m = Machine::default();
    let pci = root.join(PCI_DEVICES);
    let entries = fs::read_dir(&pci).map_err(|e| format!("{}: {e}", pci.display()))?;
    let mut dirs: Vec<(u16, Bdf, PathBuf)> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        match parse_address(&name) {
            Some((seg, bdf)) => dirs.push((seg, bdf, e.path())),
            None => m.warnings.push(format!("{}: not a PCI address", e.path().display())),
        }
    }
    dirs.sort_by_key(|(s, b, _)| (*s, b.id()));
    for (seg, bdf, dir) in dirs {
        if let Some(f) = read_function(&dir, seg, bdf, &mut m.warnings) {
            m.functions.push(f);
        }
    }
    let table = |name: &str, warnings: &mut Vec<String>| {
        let p = root.join(TABLES).join(name);
        match fs::read(&p) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                warnings.push(format!("{}: {e} (reading ACPI tables needs root)", p.display()));
                None
            }
        }
    };
    m.dmar = table("DMAR", &mut m.warnings);
    m.ivrs = table("IVRS", &mut m.warnings);
    m.spcr = table("SPCR", &mut m.warnings);
    m.cpu = read_cpu(root);
    Ok(m)
}

/// Copies what [`read`] uses from the machine below `from` (normally `/`) to a tree
/// below `to`, for bug reports and tests. Returns the number of files copied.
pub fn record(from: &Path, to: &Path) -> Result<usize, String> {
    let mut copied = 0;
    let mut copy = |src: PathBuf, dst: PathBuf| -> Result<(), String> {
        let bytes = fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        fs::write(&dst, bytes).map_err(|e| format!("{}: {e}", dst.display()))?;
        copied += 1;
        Ok(())
    };
    for name in TABLE_NAMES {
        let src = from.join(TABLES).join(name);
        if src.exists() {
            copy(src, to.join(TABLES).join(name))?;
        }
    }
    let pci = from.join(PCI_DEVICES);
    for e in fs::read_dir(&pci).map_err(|e| format!("{}: {e}", pci.display()))?.flatten() {
        let name = e.file_name();
        for f in PCI_FILES {
            let src = e.path().join(f);
            if src.exists() {
                copy(src, to.join(PCI_DEVICES).join(&name).join(f))?;
            }
        }
    }
    // The first processor only: the rest repeats it.
    if let Ok(text) = fs::read_to_string(from.join(CPUINFO)) {
        let first = text.split("\n\n").next().unwrap_or("").to_string() + "\n";
        let dst = to.join(CPUINFO);
        fs::create_dir_all(dst.parent().unwrap_or(to)).map_err(|e| e.to_string())?;
        fs::write(&dst, first).map_err(|e| format!("{}: {e}", dst.display()))?;
        copied += 1;
    }
    Ok(copied)
}

/// Writes a tree [`read`] understands for `functions` and the tables (for tests that
/// build machines, e.g. from the real-machine table corpus). Config space is 256 bytes
/// with the header type, bridge buses and a PCI Express capability when `pcie_type` is
/// set.
pub fn write_tree(
    root: &Path,
    functions: &[Function],
    tables: &[(&str, &[u8])],
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    for (name, bytes) in tables {
        let dir = root.join(TABLES);
        fs::create_dir_all(&dir).map_err(io)?;
        fs::write(dir.join(name), bytes).map_err(io)?;
    }
    for f in functions {
        let dir = root.join(PCI_DEVICES).join(f.address());
        fs::create_dir_all(&dir).map_err(io)?;
        fs::write(dir.join("vendor"), format!("0x{:04x}\n", f.vendor)).map_err(io)?;
        fs::write(dir.join("device"), format!("0x{:04x}\n", f.device)).map_err(io)?;
        let (c, s, p) = f.class;
        fs::write(dir.join("class"), format!("0x{c:02x}{s:02x}{p:02x}\n")).map_err(io)?;
        let mut resource = String::new();
        for slot in 0..13u8 {
            match f.bars.iter().find(|b| b.slot == slot) {
                Some(b) => resource.push_str(&format!(
                    "0x{:016x} 0x{:016x} 0x{:016x}\n",
                    b.base,
                    b.base + b.size - 1,
                    if b.memory { 0x40200u64 } else { 0x40101 }
                )),
                None => resource.push_str(&format!("0x{0:016x} 0x{0:016x} 0x{0:016x}\n", 0)),
            }
        }
        fs::write(dir.join("resource"), resource).map_err(io)?;
        let mut config = vec![0u8; 256];
        config[0..2].copy_from_slice(&f.vendor.to_le_bytes());
        config[2..4].copy_from_slice(&f.device.to_le_bytes());
        config[0x09] = p;
        config[0x0A] = s;
        config[0x0B] = c;
        if let Some((sec, sub)) = f.bridge {
            config[0x0E] = 1;
            config[0x18] = f.bdf.bus;
            config[0x19] = sec;
            config[0x1A] = sub;
        }
        if let Some(t) = f.pcie_type {
            config[0x06] = 0x10;
            config[0x34] = 0x40;
            config[0x40] = 0x10;
            config[0x42] = (t << 4) | 2;
        }
        fs::write(dir.join("config"), config).map_err(io)?;
    }
    Ok(())
}

/// Whether `pcie_type` names a PCIe-to-PCI bridge (for tests and messages).
pub fn is_pcie_to_pci(pcie_type: Option<u8>) -> bool {
    pcie_type == Some(PCIE_TO_PCI_BRIDGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_resources_and_config() {
        assert_eq!(parse_address("0000:02:1f.7").map(|(s, b)| (s, b.id())), Some((0, 0x02ff)));
        for bad in ["", "0000:02:1f", "zz:02:1f.0", "0000:02:20.0", "0000:02:00.8", "0000:100:00.0"]
        {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
        let r = "0x00000000fe000000 0x00000000fe0fffff 0x0000000000040200\n\
                 0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                 0x000000000000c000 0x000000000000c01f 0x0000000000040101\n\
                 garbage\n0x1 0x0 0x200\n";
        let bars = parse_resource(r);
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[0], BarInfo { slot: 0, memory: true, base: 0xfe00_0000, size: 0x10_0000 });
        assert_eq!(bars[1], BarInfo { slot: 2, memory: false, base: 0xc000, size: 0x20 });
        let mut cfg = vec![0u8; 256];
        cfg[0x0E] = 0x81;
        cfg[0x19] = 2;
        cfg[0x1A] = 3;
        cfg[0x06] = 0x10;
        cfg[0x34] = 0x50;
        cfg[0x50] = 0x05; // MSI, next 0x60
        cfg[0x51] = 0x60;
        cfg[0x60] = 0x10;
        cfg[0x62] = 0x72;
        assert_eq!(parse_config(&cfg), (Some((2, 3)), Some(7)));
        // A capability list that loops, or points past the end, ends.
        cfg[0x51] = 0x50;
        assert_eq!(parse_config(&cfg).1, None);
        cfg[0x51] = 0xFC;
        assert_eq!(parse_config(&cfg[..0x100]).1, None);
        assert_eq!(parse_config(&[]), (None, None));
    }
}
