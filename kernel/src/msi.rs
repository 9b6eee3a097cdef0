//! A PCI function's MSI capability (capability id 0x05): program one message and turn it
//! on or off. The hypervisor writes it only with messages its IOMMU unit remaps (VT-d: a
//! remappable-format handle; AMD-Vi: an index into the device's interrupt table).
#![deny(unsafe_code)]

use crate::pci::ConfigSpace;
use iommu::bits::Field;

/// MSI capability id.
const CAP_MSI: u8 = 0x05;
/// Message control (upper 16 bits of the capability's first dword): MSI enable.
const CONTROL_ENABLE: Field = Field::bit(16);
/// Message control: 64-bit address capable.
const CONTROL_64BIT: Field = Field::bit(23);
/// Message control: multiple message enable (0 = one vector).
const CONTROL_MME: Field = Field::new(20, 3);

/// One function's MSI capability.
#[derive(Debug, Clone, Copy)]
pub struct Msi {
    cfg: ConfigSpace,
    at: u16,
    wide: bool,
}

impl Msi {
    /// The function's MSI capability, if it has one.
    pub fn find(cfg: ConfigSpace) -> Option<Msi> {
        let at = cfg.find_capability(CAP_MSI)?;
        let wide = CONTROL_64BIT.is_set(u64::from(cfg.read32(at)));
        Some(Msi { cfg, at, wide })
    }

    /// Writes `address`/`data` (one vector) with MSI disabled, then enables it.
    pub fn program(&self, address: u64, data: u16) {
        self.set_enabled(false);
        self.write_message(address, data);
        self.set_enabled(true);
    }

    /// Writes `address`/`data` (one vector) without touching the enable bit.
    pub fn write_message(&self, address: u64, data: u16) {
        self.cfg.write32(self.at + 4, address as u32);
        let data_at = if self.wide {
            self.cfg.write32(self.at + 8, (address >> 32) as u32);
            self.at + 12
        } else {
            self.at + 8
        };
        self.cfg.write16(data_at, data);
        let control = CONTROL_MME.set(u64::from(self.cfg.read32(self.at)), 0);
        self.cfg.write32(self.at, control as u32);
    }

    /// Turns MSI on or off.
    pub fn set_enabled(&self, on: bool) {
        let control = CONTROL_ENABLE.with(u64::from(self.cfg.read32(self.at)), on);
        self.cfg.write32(self.at, control as u32);
    }
}
