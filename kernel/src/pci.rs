//! PCI enumeration through ECAM (MCFG): every function on every bus of each window, each
//! bus scanned once (bridges followed first), with each bridge's bus range kept. A machine
//! without MCFG (Bochs' i440FX, older chipsets) is enumerated through configuration
//! mechanism #1 (ports 0xCF8/0xCFC, the first 256 bytes of each function, segment 0).

use alloc::vec::Vec;
use core::fmt;

/// A PCI function's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    /// PCI segment group.
    pub segment: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number (0-31).
    pub device: u8,
    /// Function number (0-7).
    pub function: u8,
}

impl Bdf {
    /// The 16-bit requester id (bus:dev.fn) the IOMMU sees.
    pub fn requester_id(&self) -> u16 {
        (self.bus as u16) << 8 | (self.device as u16) << 3 | self.function as u16
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.segment, self.bus, self.device, self.function)
    }
}

/// A decoded base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bar {
    /// Memory space (`prefetchable`, 64-bit when `wide`).
    Memory {
        /// Base address.
        base: u64,
        /// Size in bytes.
        size: u64,
        /// A 64-bit BAR (takes two slots).
        wide: bool,
        /// Prefetchable.
        prefetchable: bool,
    },
    /// I/O space.
    Io {
        /// Port base.
        base: u32,
        /// Size in ports.
        size: u32,
    },
}

/// One enumerated PCI function.
#[derive(Debug, Clone)]
pub struct PciFunction {
    /// Where it is.
    pub bdf: Bdf,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class, subclass, programming interface.
    pub class: (u8, u8, u8),
    /// For bridges: (secondary bus, subordinate bus).
    pub bridge: Option<(u8, u8)>,
    /// Implemented BARs by slot index.
    pub bars: Vec<(usize, Bar)>,
    /// PCI Express device/port type (capability 0x10), when the function has one.
    pub pcie_type: Option<u8>,
    cfg: ConfigSpace,
}

/// Configuration space of one function, reached through ECAM or through ports
/// 0xCF8/0xCFC.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpace {
    access: Access,
}

/// How a function's configuration space is reached.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Its 4 KiB ECAM page (mapped uncached by `enumerate`).
    Ecam(u64),
    /// Mechanism #1: CONFIG_ADDRESS bits 23:8 (bus, device, function); 256 bytes.
    Ports(u32),
}

/// Configuration mechanism #1's address and data ports.
const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
/// CONFIG_ADDRESS bit 31: the access goes to configuration space.
const CONFIG_ENABLE: u32 = 1 << 31;

/// Serializes the two-step port access (address, then data).
static PORTS: spin::Mutex<()> = spin::Mutex::new(());

fn port_access(bdf: u32, offset: u16, write: Option<u32>) -> u32 {
    use x86_64::instructions::port::Port;
    let _held = PORTS.lock();
    let address = CONFIG_ENABLE | bdf | u32::from(offset & 0xFC);
    // SAFETY: 0xCF8/0xCFC are the PCI configuration ports on every PC chipset; writing
    // CONFIG_ADDRESS only selects a register, and the data access reaches configuration
    // space (held under `PORTS`, so no other access interleaves).
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(address);
        let mut data = Port::<u32>::new(CONFIG_DATA);
        match write {
            Some(v) => {
                data.write(v);
                0
            }
            None => data.read(),
        }
    }
}

impl ConfigSpace {
    /// Function `dev`.`func` on `bus` through ports 0xCF8/0xCFC.
    fn ports(bus: u8, dev: u8, func: u8) -> ConfigSpace {
        let bdf = u32::from(bus) << 16 | u32::from(dev & 31) << 11 | u32::from(func & 7) << 8;
        ConfigSpace { access: Access::Ports(bdf) }
    }

    /// 32-bit config read at `offset` (0..4096 through ECAM, 0..256 through the ports;
    /// 4-aligned). Beyond 256 bytes through the ports reads all ones.
    pub fn read32(&self, offset: u16) -> u32 {
        match self.access {
            Access::Ecam(base) => {
                let off = (offset & 0xFFC) as u64;
                // SAFETY: `base` is this function's 4 KiB ECAM page inside a window mapped
                // uncached by `enumerate`; ECAM takes aligned 32-bit accesses.
                unsafe { core::ptr::read_volatile((base + off) as *const u32) }
            }
            Access::Ports(_) if offset >= 256 => u32::MAX,
            Access::Ports(bdf) => port_access(bdf, offset, None),
        }
    }

    /// 32-bit config write (dropped beyond 256 bytes through the ports).
    pub fn write32(&self, offset: u16, value: u32) {
        match self.access {
            Access::Ecam(base) => {
                let off = (offset & 0xFFC) as u64;
                // SAFETY: as for `read32`.
                unsafe { core::ptr::write_volatile((base + off) as *mut u32, value) }
            }
            Access::Ports(_) if offset >= 256 => {}
            Access::Ports(bdf) => {
                port_access(bdf, offset, Some(value));
            }
        }
    }

    /// 16-bit config write (read-modify-write of the containing dword).
    pub fn write16(&self, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = self.read32(offset);
        self.write32(offset, (old & !(0xFFFF << shift)) | (value as u32) << shift);
    }

    /// Sets or clears bus mastering (command register bit 2).
    pub fn set_bus_master(&self, on: bool) {
        let cmd = self.read32(4) as u16;
        let cmd = if on { cmd | 0x6 } else { cmd & !0x4 };
        self.write16(4, cmd);
    }
}

impl PciFunction {
    /// This function's configuration space.
    pub fn config(&self) -> ConfigSpace {
        self.cfg
    }

    /// The memory BAR in `slot`, if implemented.
    pub fn memory_bar(&self, slot: usize) -> Option<(u64, u64)> {
        self.bars.iter().find_map(|(s, b)| match b {
            Bar::Memory { base, size, .. } if *s == slot => Some((*base, *size)),
            _ => None,
        })
    }
}

/// The PCI Express capability's device/port type.
fn pcie_type(cfg: ConfigSpace) -> Option<u8> {
    let at = cfg.find_capability(0x10)?;
    Some(((cfg.read32(at) >> 20) & 0xF) as u8)
}

impl ConfigSpace {
    /// The offset of the first capability with `id` (0x05 MSI, 0x10 PCI Express), following
    /// the list with a bound (a looping list is a hardware fault, not a reason to hang).
    pub fn find_capability(&self, id: u8) -> Option<u16> {
        if self.read32(4) & (1 << 20) == 0 {
            return None;
        }
        let mut ptr = (self.read32(0x34) & 0xFC) as u16;
        for _ in 0..48 {
            if ptr < 0x40 {
                return None;
            }
            let header = self.read32(ptr);
            if header & 0xFF == u32::from(id) {
                return Some(ptr);
            }
            ptr = ((header >> 8) & 0xFC) as u16;
        }
        None
    }
}

fn ecam_address(window: u64, first_bus: u8, bus: u8, dev: u8, func: u8) -> u64 {
    window + (((bus - first_bus) as u64) << 20 | (dev as u64) << 15 | (func as u64) << 12)
}

fn size_bars(cfg: ConfigSpace, count: usize) -> Vec<(usize, Bar)> {
    let mut bars = Vec::new();
    // Stop decoding while sizing so a half-written BAR never claims an address.
    let cmd = cfg.read32(4) as u16;
    cfg.write16(4, cmd & !0x3);
    let mut slot = 0;
    while slot < count {
        let off = 0x10 + 4 * slot as u16;
        let orig = cfg.read32(off);
        cfg.write32(off, 0xFFFF_FFFF);
        let mask = cfg.read32(off);
        cfg.write32(off, orig);
        if orig & 1 == 1 {
            let size = (!(mask & !0x3)).wrapping_add(1) & 0xFFFF;
            if mask != 0 && size != 0 {
                bars.push((slot, Bar::Io { base: orig & !0x3, size }));
            }
            slot += 1;
            continue;
        }
        let wide = (orig >> 1) & 3 == 2 && slot + 1 < count;
        let (mut base, mut mask64) =
            ((orig & !0xF) as u64, (mask & !0xF) as u64 | 0xFFFF_FFFF_0000_0000);
        if wide {
            let hi_off = off + 4;
            let hi = cfg.read32(hi_off);
            cfg.write32(hi_off, 0xFFFF_FFFF);
            let hi_mask = cfg.read32(hi_off);
            cfg.write32(hi_off, hi);
            base |= (hi as u64) << 32;
            mask64 = (mask64 & 0xFFFF_FFFF) | (hi_mask as u64) << 32;
        }
        let size = (!mask64).wrapping_add(1);
        if mask & !0xF != 0 && size != 0 {
            bars.push((slot, Bar::Memory { base, size, wide, prefetchable: orig & 8 != 0 }));
        }
        slot += if wide { 2 } else { 1 };
    }
    cfg.write16(4, cmd);
    bars
}

/// Buses already scanned in one ECAM window (one bit per bus number).
struct VisitedBuses([u64; 4]);

impl VisitedBuses {
    /// Marks `bus`; false when it was already marked.
    fn mark(&mut self, bus: u8) -> bool {
        let (word, bit) = ((bus / 64) as usize, bus % 64);
        let fresh = self.0[word] & 1 << bit == 0;
        self.0[word] |= 1 << bit;
        fresh
    }
}

/// Where a scan reads configuration space: an ECAM window (base, segment, first and
/// last bus) or the ports (segment 0, buses 0-255).
#[derive(Debug, Clone, Copy)]
enum Window {
    Ecam(u64, u16, u8, u8),
    Ports,
}

impl Window {
    fn segment_and_buses(&self) -> (u16, u8, u8) {
        match *self {
            Window::Ecam(_, segment, first, last) => (segment, first, last),
            Window::Ports => (0, 0, 255),
        }
    }

    fn config(&self, bus: u8, dev: u8, func: u8) -> ConfigSpace {
        match *self {
            Window::Ecam(base, _, first, _) => {
                ConfigSpace { access: Access::Ecam(ecam_address(base, first, bus, dev, func)) }
            }
            Window::Ports => ConfigSpace::ports(bus, dev, func),
        }
    }
}

fn scan_bus(
    out: &mut Vec<PciFunction>,
    window: Window,
    bus: u8,
    depth: usize,
    visited: &mut VisitedBuses,
) {
    let (segment, first, last) = window.segment_and_buses();
    // A bus is scanned once, whatever bridges claim it (firmware may program two
    // bridges with overlapping ranges).
    if bus < first || bus > last || depth > 32 || !visited.mark(bus) {
        return;
    }
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let cfg = window.config(bus, dev, func);
            let id = cfg.read32(0);
            if id & 0xFFFF == 0xFFFF {
                if func == 0 {
                    break;
                }
                continue;
            }
            let class = cfg.read32(8);
            let header = (cfg.read32(0xC) >> 16) as u8;
            let bridge = if header & 0x7F == 1 {
                let buses = cfg.read32(0x18);
                Some(((buses >> 8) as u8, (buses >> 16) as u8))
            } else {
                None
            };
            let bars = match header & 0x7F {
                0 => size_bars(cfg, 6),
                1 => size_bars(cfg, 2),
                _ => Vec::new(),
            };
            out.push(PciFunction {
                bdf: Bdf { segment, bus, device: dev, function: func },
                vendor: id as u16,
                device: (id >> 16) as u16,
                class: ((class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8),
                bridge,
                bars,
                pcie_type: pcie_type(cfg),
                cfg,
            });
            if let Some((secondary, _)) = bridge {
                if secondary > bus {
                    scan_bus(out, window, secondary, depth + 1, visited);
                }
            }
            if func == 0 && header & 0x80 == 0 {
                break;
            }
        }
    }
}

/// Enumerates every ECAM window (each mapped uncached first), or, when the machine has
/// none (no MCFG), segment 0 through ports 0xCF8/0xCFC.
pub fn enumerate(windows: &[(u64, u16, u8, u8)]) -> Vec<PciFunction> {
    let mut out = Vec::new();
    if windows.is_empty() {
        log::info!("pci: no ECAM window: configuration access through ports 0xCF8/0xCFC");
        let mut visited = VisitedBuses([0; 4]);
        scan_bus(&mut out, Window::Ports, 0, 0, &mut visited);
        for bus in 0..=255 {
            scan_bus(&mut out, Window::Ports, bus, 0, &mut visited);
        }
        return out;
    }
    for &(base, segment, first, last) in windows {
        let w = Window::Ecam(base, segment, first, last);
        if last < first {
            log::warn!("[Firmware Bug] MCFG: bus range {first:#x}-{last:#x} is empty");
            continue;
        }
        let len = ((last - first) as u64 + 1) << 20;
        if let Err(e) = crate::mem::paging::map_mmio(base, len) {
            log::error!("pci: cannot map ECAM window at {base:#x}: {e}");
            continue;
        }
        // Bridges first (depth-first from the first bus), then every bus of the window
        // no bridge led to: functions on buses behind unconfigured or hidden bridges,
        // or on a second root bus, are still found.
        let mut visited = VisitedBuses([0; 4]);
        scan_bus(&mut out, w, first, 0, &mut visited);
        for bus in first..=last {
            scan_bus(&mut out, w, bus, 0, &mut visited);
        }
    }
    out
}

/// Logs one line per function (and its BARs at debug level).
pub fn log_functions(list: &[PciFunction]) {
    log::info!("pci: {} functions", list.len());
    for f in list {
        let (c, s, p) = f.class;
        let kind = match f.bridge {
            Some((sec, sub)) => alloc::format!(" bridge to buses {sec:#04x}-{sub:#04x}"),
            None => alloc::string::String::new(),
        };
        log::info!(
            "pci: {} {:04x}:{:04x} class {c:02x}{s:02x}{p:02x}{kind}",
            f.bdf,
            f.vendor,
            f.device
        );
        for (slot, bar) in &f.bars {
            match bar {
                Bar::Memory { base, size, wide, prefetchable } => log::info!(
                    "pci:     BAR{slot} mem {base:#x} size {size:#x}{}{}",
                    if *wide { " 64-bit" } else { "" },
                    if *prefetchable { " prefetchable" } else { "" }
                ),
                Bar::Io { base, size } => {
                    log::info!("pci:     BAR{slot} io {base:#x} size {size:#x}")
                }
            }
        }
    }
}
