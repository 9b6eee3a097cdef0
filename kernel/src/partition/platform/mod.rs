//! The guest platform: devices a partition's guest reaches through I/O ports, each a
//! [`PortDevice`], dispatched by a [`PortBus`]. A Linux guest gets a 16550 UART at
//! 0x3F8 ([`uart`]) and PCI configuration space ([`pci`]); other port devices (the legacy interrupt controllers and timers)
//! plug into the same bus. What no device claims reads all ones and drops writes, as on
//! a PC with nothing at that port (see docs/linux-guest.md).

pub mod pci;
pub mod uart;

use alloc::boxed::Box;
use alloc::vec::Vec;

/// A device behind I/O ports. Accesses are 1, 2 or 4 bytes wide (`size`); a read returns
/// the value in the low `size` bytes.
pub trait PortDevice {
    /// Whether `port` is one of this device's.
    fn claims(&self, port: u16) -> bool;
    /// An IN from `port`.
    fn read(&mut self, port: u16, size: u8) -> u32;
    /// An OUT of `value` to `port`.
    fn write(&mut self, port: u16, size: u8, value: u32);
}

/// The port devices of one partition, and what reached no device.
#[derive(Default)]
pub struct PortBus {
    devices: Vec<Box<dyn PortDevice>>,
    /// Accesses to ports no device claims (read all ones, writes dropped).
    pub unclaimed: u64,
}

impl PortBus {
    /// Adds a device; the first device that claims a port serves it.
    #[allow(dead_code)] // the legacy interrupt controllers and timers plug in here
    pub fn add(&mut self, device: Box<dyn PortDevice>) {
        self.devices.push(device);
    }

    /// An IN from `port`: the claiming device's value, else all ones.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        match self.devices.iter_mut().find(|d| d.claims(port)) {
            Some(d) => d.read(port, size),
            None => {
                self.unclaimed += 1;
                u32::MAX
            }
        }
    }

    /// An OUT to `port`: to the claiming device, else dropped.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        match self.devices.iter_mut().find(|d| d.claims(port)) {
            Some(d) => d.write(port, size, value),
            None => self.unclaimed += 1,
        }
    }
}

/// `value` as an IN of `size` bytes leaves it in RAX: AL and AX keep RAX's other bits, a
/// 32-bit IN zero-extends.
pub fn in_result(old_rax: u64, size: u8, value: u32) -> u64 {
    match size {
        1 => old_rax & !0xFF | u64::from(value & 0xFF),
        2 => old_rax & !0xFFFF | u64::from(value & 0xFFFF),
        _ => u64::from(value),
    }
}
