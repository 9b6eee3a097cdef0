//! PCI configuration space for a Linux guest, through mechanism #1 (ports 0xCF8 and
//! 0xCFC-0xCFF, intercepted): a virtual host bridge at 00:00.0 (Linux's
//! `pci_sanity_check` needs a host bridge, an Intel vendor or DMI before it trusts
//! mechanism #1) and the partition's assigned devices at 00:01.0, 00:02.0, ... in the
//! order they were attached, each header the hypervisor's: identity, class, revision and
//! subsystem read from the device; a virtual command register; BAR0 at its
//! guest-physical address (the nested tables map it there), sized the usual way (write
//! all ones, read the mask) and otherwise fixed; the other BARs absent; no INTx pin; and
//! emulated capabilities only: the MSI capability of `partition::interrupts` at 0x40
//! (the first device's, when its MSI is routed) and the MSI-X capability of
//! [`super::msix`] at 0x50 (every device with MSI-X in BAR0). Every other function reads
//! all ones. The guest never reaches the physical configuration space.

use super::msix::Msix;
use crate::iommu::IommuSystem;
use crate::partition::interrupts::{DeviceInterrupt, CONFIG_ADDRESS, CONFIG_DATA};
use crate::pci::ConfigSpace;
use alloc::vec::Vec;
use iommu::bits::Field;

/// CONFIG_ADDRESS: enable bit.
const CA_ENABLE: Field = Field::bit(31);
/// CONFIG_ADDRESS: bus, device, function (bits 23:8).
const CA_BDF: Field = Field::new(8, 16);
/// CONFIG_ADDRESS: register (bits 7:2).
const CA_REGISTER: Field = Field::new(2, 6);
/// The host bridge's identity: Intel's Q35 host bridge id, class 06:00.
const HOST_BRIDGE_ID: u32 = 0x29C0_8086;
/// The MSI capability's place and length in the device's header (interrupts.rs).
const MSI_CAP: u16 = 0x40;
const MSI_CAP_END: u16 = 0x50;
/// The MSI-X capability's place and length (msix.rs).
const MSIX_CAP: u16 = 0x50;
const MSIX_CAP_END: u16 = 0x5C;
/// Status: capabilities list present.
const STATUS_CAP_LIST: u32 = 1 << 20;

/// The assigned device as the guest sees it.
#[derive(Debug)]
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
    /// Its emulated MSI-X, when it has one in BAR0.
    msix: Option<Msix>,
}

/// A Linux guest's configuration mechanism.
#[derive(Debug, Default)]
pub struct PciHost {
    latch: u32,
    devices: Vec<Function>,
}

/// Devices shown (00:01.0 to 00:1f.0).
const MAX_DEVICES: usize = 31;

impl PciHost {
    /// Shows `physical` at the next free device number with BAR0 at `bar_gpa`
    /// (`bar_size` bytes) and the MSI-X in `msix` (taken) as its own. Returns the device
    /// number; `None` when all are in use (`msix` is then left with the caller, to be
    /// given back).
    pub fn assign(
        &mut self,
        physical: ConfigSpace,
        bar_gpa: u64,
        bar_size: u64,
        msix: &mut Option<Msix>,
    ) -> Option<u8> {
        if self.devices.len() >= MAX_DEVICES {
            return None;
        }
        let bar64 = physical.read32(0x10) & 0b111 == 0b100;
        self.devices.push(Function {
            physical,
            bar_gpa,
            bar_size,
            bar64,
            command: 0,
            interrupt_line: 0xFF,
            sizing: [false; 2],
            msix: msix.take(),
        });
        Some(self.devices.len() as u8)
    }

    /// Every device's pending MSI-X interrupts, as guest vectors, to `deliver`.
    pub fn drain(&mut self, deliver: &mut dyn FnMut(u8)) {
        for f in &mut self.devices {
            if let Some(m) = f.msix.as_mut() {
                m.drain(deliver);
            }
        }
    }

    /// Whether `gpa` is in a device's trapped MSI-X page.
    pub fn claims_mmio(&self, gpa: u64) -> bool {
        self.trapped(gpa).is_some()
    }

    fn trapped(&self, gpa: u64) -> Option<usize> {
        self.devices.iter().position(|f| {
            gpa.checked_sub(f.bar_gpa)
                .is_some_and(|o| o < f.bar_size && f.msix.as_ref().is_some_and(|m| m.traps(o)))
        })
    }

    /// Turns every device's MSI-X off and gives its routing and host vectors back (at
    /// destroy, before the devices are detached); logs what each delivered.
    pub fn release(&mut self, iommu: &mut IommuSystem, partition: &str) {
        for (i, f) in self.devices.iter_mut().enumerate() {
            if let Some(mut m) = f.msix.take() {
                log::info!(
                    "partition {partition}: 00:{:02x}.0 MSI-X: {} interrupts taken at its host vectors, {} injected, {} dropped",
                    i + 1,
                    m.taken(),
                    m.injected,
                    m.dropped
                );
                m.release(iommu);
            }
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
        let dword = match (bdf, self.function(bdf)) {
            (0, _) => host_bridge(offset & !3),
            (_, Some(i)) => self.devices[i].read(offset & !3, msi.filter(|_| i == 0)),
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
        if let Some(i) = self.function(bdf) {
            self.devices[i].write(offset, size, value, msi.filter(|_| i == 0));
        }
    }

    /// The index of the device at `bdf` (bus 0, function 0, device 1..).
    fn function(&self, bdf: u64) -> Option<usize> {
        let dev = (bdf >> 3) as usize;
        (bdf & 0xFF07 == 0 && (1..=self.devices.len()).contains(&dev)).then(|| dev - 1)
    }
}

/// A guest access to a trapped MSI-X page: the device's emulated table or PBA.
impl super::MmioDevice for PciHost {
    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        match self.trapped(gpa) {
            Some(i) => {
                let f = &self.devices[i];
                f.msix.as_ref().map_or(u64::MAX, |m| m.read(gpa - f.bar_gpa, size))
            }
            None => u64::MAX,
        }
    }

    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) {
        if let Some(i) = self.trapped(gpa) {
            let f = &mut self.devices[i];
            let base = f.bar_gpa;
            if let Some(m) = f.msix.as_mut() {
                m.write(gpa - base, size, value);
            }
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

    /// The first capability in the guest's list (0: none).
    fn first_cap(&self, msi: bool) -> u16 {
        if msi {
            MSI_CAP
        } else if self.msix.is_some() {
            MSIX_CAP
        } else {
            0
        }
    }

    fn read(&self, offset: u16, msi: Option<&DeviceInterrupt>) -> u32 {
        let mask = !(self.bar_size.max(16) - 1);
        let caps = self.first_cap(msi.is_some());
        match offset {
            0x00 | 0x08 | 0x2C => self.physical.read32(offset),
            0x04 => u32::from(self.command) | if caps != 0 { STATUS_CAP_LIST } else { 0 },
            // Header type without the multi-function bit: one function is shown.
            0x0C => self.physical.read32(0x0C) & 0x007F_0000,
            0x10 if self.sizing[0] => mask as u32 | self.bar_flags(),
            0x10 => self.bar_gpa as u32 & !0xF | self.bar_flags(),
            0x14 if self.bar64 && self.sizing[1] => (mask >> 32) as u32,
            0x14 if self.bar64 => (self.bar_gpa >> 32) as u32,
            0x34 => u32::from(caps),
            // No INTx pin: the device's legacy interrupt is not routed to the guest.
            0x3C => u32::from(self.interrupt_line),
            o if (MSI_CAP..MSI_CAP_END).contains(&o) => msi.map_or(0, |m| {
                let dword = m.config_read(o);
                // The MSI capability's next pointer: the MSI-X capability, if any.
                match (o, self.msix.is_some()) {
                    (MSI_CAP, true) => dword | u32::from(MSIX_CAP) << 8,
                    _ => dword,
                }
            }),
            o if (MSIX_CAP..MSIX_CAP_END).contains(&o) => {
                self.msix.as_ref().map_or(0, |m| m.config_read((o - MSIX_CAP) / 4, 0))
            }
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
            o if (MSI_CAP..MSI_CAP_END).contains(&o) => {
                if let Some(m) = msi {
                    let merged = merge(m.config_read(o), offset, size, value);
                    m.config_write(o, merged);
                }
            }
            o if (MSIX_CAP..MSIX_CAP_END).contains(&o) => {
                if let Some(m) = self.msix.as_mut() {
                    let index = (o - MSIX_CAP) / 4;
                    let merged = merge(m.config_read(index, 0), offset, size, value);
                    m.config_write(index, merged);
                }
            }
            _ => {}
        }
    }
}

/// A write of `size` bytes of `value` at configuration offset `offset`, merged into the
/// dword that holds it (`old`); bytes past the dword are dropped.
fn merge(old: u32, offset: u16, size: u8, value: u32) -> u32 {
    let shift = u32::from(offset & 3) * 8;
    let bits = (u32::from(size.clamp(1, 4)) * 8).min(32 - shift);
    let m = if bits == 32 { u32::MAX } else { ((1u32 << bits) - 1) << shift };
    (old & !m) | (value << shift & m)
}
