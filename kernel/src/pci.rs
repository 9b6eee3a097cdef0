//! PCI enumeration through ECAM (MCFG): every function on every bus of each window, each
//! bus scanned once (bridges followed first), with each bridge's bus range kept.

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
    ecam: u64,
}

/// Configuration space of one function, reached through ECAM.
#[derive(Debug, Clone, Copy)]
pub struct ConfigSpace {
    base: u64,
}

impl ConfigSpace {
    /// 32-bit config read at `offset` (0..4096, 4-aligned).
    pub fn read32(&self, offset: u16) -> u32 {
        let off = (offset & 0xFFC) as u64;
        // SAFETY: `base` is this function's 4 KiB ECAM page inside a window mapped
        // uncached by `enumerate`; ECAM takes aligned 32-bit accesses.
        unsafe { core::ptr::read_volatile((self.base + off) as *const u32) }
    }

    /// 32-bit config write.
    pub fn write32(&self, offset: u16, value: u32) {
        let off = (offset & 0xFFC) as u64;
        // SAFETY: as for `read32`.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, value) }
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
        ConfigSpace { base: self.ecam }
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

fn scan_bus(
    out: &mut Vec<PciFunction>,
    window: (u64, u16, u8, u8),
    bus: u8,
    depth: usize,
    visited: &mut VisitedBuses,
) {
    let (base, segment, first, last) = window;
    // A bus is scanned once, whatever bridges claim it (firmware may program two
    // bridges with overlapping ranges).
    if bus < first || bus > last || depth > 32 || !visited.mark(bus) {
        return;
    }
    for dev in 0..32u8 {
        for func in 0..8u8 {
            let cfg = ConfigSpace { base: ecam_address(base, first, bus, dev, func) };
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
                ecam: cfg.base,
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

/// Enumerates every ECAM window; maps each window uncached first.
pub fn enumerate(windows: &[(u64, u16, u8, u8)]) -> Vec<PciFunction> {
    let mut out = Vec::new();
    for &w in windows {
        let (base, _, first, last) = w;
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
