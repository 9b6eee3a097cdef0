//! PCI configuration space for a Linux guest, through mechanism #1 (ports 0xCF8 and
//! 0xCFC-0xCFF, intercepted): a virtual host bridge at 00:00.0 (Linux's
//! `pci_sanity_check` needs a host bridge, an Intel vendor or DMI before it trusts
//! mechanism #1) and the partition's first assigned device at 00:01.0, whose header is
//! the hypervisor's: identity, class, revision and subsystem read from the device; a
//! virtual command register; BAR0 at its guest-physical address (the nested tables map
//! it there), sized the usual way (write all ones, read the mask) and otherwise fixed;
//! the other BARs absent; no INTx pin; and, when the device's MSI is routed, the MSI
//! capability of `partition::interrupts` at 0x40 (one emulation for every guest). Every
//! other function reads all ones. The guest never reaches the physical configuration
//! space.

use crate::partition::interrupts::{DeviceInterrupt, CONFIG_ADDRESS, CONFIG_DATA};
use crate::pci::ConfigSpace;
use iommu::bits::Field;

/// CONFIG_ADDRESS: enable bit.
const CA_ENABLE: Field = Field::bit(31);
/// CONFIG_ADDRESS: bus, device, function (bits 23:8).
const CA_BDF: Field = Field::new(8, 16);
/// CONFIG_ADDRESS: register (bits 7:2).
const CA_REGISTER: Field = Field::new(2, 6);
/// The host bridge's identity: Intel's Q35 host bridge id, class 06:00.
const HOST_BRIDGE_ID: u32 = 0x29C0_8086;
/// Where the assigned device appears: bus 0, device 1, function 0.
pub const DEVICE_BDF: u64 = 1 << 3;
/// The MSI capability's place and length in the device's header (interrupts.rs).
const MSI_CAP: u16 = 0x40;
const MSI_CAP_END: u16 = 0x50;
/// Status: capabilities list present.
const STATUS_CAP_LIST: u32 = 1 << 20;

/// The assigned device as the guest sees it.
#[derive(Debug, Clone, Copy)]
struct Function {
    physical: ConfigSpace,
    bar_gpa: u64,
    bar_size: u64,
    /// BAR0 is 64-bit (BAR1 holds its upper half).
    bar64: bool,
    command: u16,
    interrupt_line: u8,
    /// The guest wrote all ones to BAR0 / BAR1 (reads give the size mask until the next
    /// write).
    sizing: [bool; 2],
}

/// A Linux guest's configuration mechanism.
#[derive(Debug, Default)]
pub struct PciHost {
    latch: u32,
    device: Option<Function>,
}

impl PciHost {
    /// Shows `physical` at 00:01.0 with BAR0 at `bar_gpa` (`bar_size` bytes). Only the
    /// first device is shown.
    pub fn assign(&mut self, physical: ConfigSpace, bar_gpa: u64, bar_size: u64) {
        if self.device.is_none() {
            let bar64 = physical.read32(0x10) & 0b111 == 0b100;
            self.device = Some(Function {
                physical,
                bar_gpa,
                bar_size,
                bar64,
                command: 0,
                interrupt_line: 0xFF,
                sizing: [false; 2],
            });
        }
    }

    /// The function and register a data-port access reaches (`None`: disabled latch).
    fn target(&self, port: u16) -> Option<(u64, u16)> {
        let byte = port.checked_sub(CONFIG_DATA).filter(|b| *b < 4)?;
        let latch = u64::from(self.latch);
        CA_ENABLE
            .is_set(latch)
            .then(|| (CA_BDF.get(latch), CA_REGISTER.get(latch) as u16 * 4 + byte))
    }

    /// A guest IN from a configuration port.
    pub fn read(&self, port: u16, size: u8, msi: Option<&DeviceInterrupt>) -> u32 {
        if port == CONFIG_ADDRESS {
            return if size == 4 { self.latch } else { u32::MAX };
        }
        let Some((bdf, offset)) = self.target(port) else { return u32::MAX };
        let dword = match bdf {
            0 => host_bridge(offset & !3),
            DEVICE_BDF => match &self.device {
                Some(f) => f.read(offset & !3, msi),
                None => u32::MAX,
            },
            _ => u32::MAX,
        };
        let mask = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => u32::MAX,
        };
        (dword >> (u32::from(offset & 3) * 8)) & mask
    }

    /// A guest OUT to a configuration port.
    pub fn write(&mut self, port: u16, size: u8, value: u32, msi: Option<&mut DeviceInterrupt>) {
        if port == CONFIG_ADDRESS {
            if size == 4 {
                self.latch = value;
            }
            return;
        }
        let Some((bdf, offset)) = self.target(port) else { return };
        if let (DEVICE_BDF, Some(f)) = (bdf, self.device.as_mut()) {
            f.write(offset, size, value, msi);
        }
    }
}

/// The host bridge's header: identity, class 06:00, nothing else.
fn host_bridge(offset: u16) -> u32 {
    match offset {
        0x00 => HOST_BRIDGE_ID,
        0x08 => 0x0600_0000,
        _ => 0,
    }
}

impl Function {
    fn bar_flags(&self) -> u32 {
        self.physical.read32(0x10) & 0xF
    }

    fn read(&self, offset: u16, msi: Option<&DeviceInterrupt>) -> u32 {
        let mask = !(self.bar_size.max(16) - 1);
        match offset {
            0x00 | 0x08 | 0x2C => self.physical.read32(offset),
            0x04 => u32::from(self.command) | if msi.is_some() { STATUS_CAP_LIST } else { 0 },
            // Header type without the multi-function bit: one function is shown.
            0x0C => self.physical.read32(0x0C) & 0x007F_0000,
            0x10 if self.sizing[0] => mask as u32 | self.bar_flags(),
            0x10 => self.bar_gpa as u32 & !0xF | self.bar_flags(),
            0x14 if self.bar64 && self.sizing[1] => (mask >> 32) as u32,
            0x14 if self.bar64 => (self.bar_gpa >> 32) as u32,
            0x34 => msi.map_or(0, |_| u32::from(MSI_CAP)),
            // No INTx pin: the device's legacy interrupt is not routed to the guest.
            0x3C => u32::from(self.interrupt_line),
            o if (MSI_CAP..MSI_CAP_END).contains(&o) => msi.map_or(0, |m| m.config_read(o)),
            _ => 0,
        }
    }

    fn write(&mut self, offset: u16, size: u8, value: u32, msi: Option<&mut DeviceInterrupt>) {
        let dword = offset & !3;
        match dword {
            // The command register (bits 15:0); status writes are ignored.
            0x04 if offset < 6 => {
                let shift = u32::from(offset & 3) * 8;
                let bytes = u32::from(size).min(2 - u32::from(offset & 1)) * 8;
                let m = ((1u32 << bytes) - 1) << shift;
                let old = u32::from(self.command);
                self.command = ((old & !m) | (value << shift & m)) as u16;
            }
            0x10 | 0x14 if size == 4 => {
                // All ones asks for the size; any other value puts the BAR back (it
                // stays where the nested tables map it).
                self.sizing[usize::from(dword == 0x14)] = value == u32::MAX;
            }
            0x3C if offset == 0x3C => self.interrupt_line = value as u8,
            o if (MSI_CAP..MSI_CAP_END).contains(&o) && size == 4 => {
                if let Some(m) = msi {
                    m.config_write(o, value);
                }
            }
            _ => {}
        }
    }
}
