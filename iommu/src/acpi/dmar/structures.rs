//! The remapping structures of a DMAR table, decoded.

use super::DRHD_INCLUDE_PCI_ALL;
use crate::acpi::scope::DeviceScopes;

/// DRHD: one DMA remapping hardware unit.
#[derive(Debug, Clone)]
pub struct Drhd<'a> {
    /// Table offset of the structure.
    pub offset: usize,
    /// Stated length.
    pub length: u16,
    /// Flags (`DRHD_INCLUDE_PCI_ALL`).
    pub flags: u8,
    /// Size field: bits 3:0 are log2 of the register set size in 4 KiB pages.
    pub size: u8,
    /// PCI segment.
    pub segment: u16,
    /// Register base address.
    pub base: u64,
    /// Device scopes.
    pub scopes: DeviceScopes<'a>,
}

impl Drhd<'_> {
    /// Whether this unit covers all devices of its segment not claimed elsewhere.
    pub fn include_pci_all(&self) -> bool {
        self.flags & DRHD_INCLUDE_PCI_ALL != 0
    }

    /// Size of the register set in bytes (4 KiB when the size field is 0).
    pub fn register_size(&self) -> u64 {
        4096u64 << (self.size & 0xf)
    }
}

/// RMRR: memory a device keeps using for DMA across the hand-off to the OS.
#[derive(Debug, Clone)]
pub struct Rmrr<'a> {
    /// Table offset of the structure.
    pub offset: usize,
    /// Stated length.
    pub length: u16,
    /// PCI segment.
    pub segment: u16,
    /// First byte of the region.
    pub base: u64,
    /// Last byte of the region (inclusive limit).
    pub limit: u64,
    /// Devices that use the region.
    pub scopes: DeviceScopes<'a>,
}

/// ATSR: root ports that support Address Translation Services.
#[derive(Debug, Clone)]
pub struct Atsr<'a> {
    /// Table offset of the structure.
    pub offset: usize,
    /// Stated length.
    pub length: u16,
    /// Flags (`ATSR_ALL_PORTS`).
    pub flags: u8,
    /// PCI segment.
    pub segment: u16,
    /// Root ports (bridge scopes).
    pub scopes: DeviceScopes<'a>,
}

/// RHSA: the NUMA proximity domain of a remapping unit.
#[derive(Debug, Clone, Copy)]
pub struct Rhsa {
    /// Table offset of the structure.
    pub offset: usize,
    /// Stated length.
    pub length: u16,
    /// Register base of the unit it describes.
    pub base: u64,
    /// Proximity domain.
    pub proximity_domain: u32,
}

/// ANDD: an ACPI namespace device that scopes refer to by number.
#[derive(Debug, Clone, Copy)]
pub struct Andd<'a> {
    /// Table offset of the structure.
    pub offset: usize,
    /// Stated length.
    pub length: u16,
    /// ACPI device number (the enumeration id of type-5 scopes).
    pub device_number: u8,
    /// Object name bytes (NUL-terminated ASCII in practice).
    pub name: &'a [u8],
}

/// SATC: SoC-integrated devices with an address translation cache.
#[derive(Debug, Clone)]
pub struct Satc<'a> {
    /// Table offset of the structure.
    pub offset: usize,
    /// Stated length.
    pub length: u16,
    /// Flags (`SATC_ATC_REQUIRED`).
    pub flags: u8,
    /// PCI segment.
    pub segment: u16,
    /// The devices.
    pub scopes: DeviceScopes<'a>,
}

/// SIDP: SoC-integrated devices with special properties (in each scope's flags).
#[derive(Debug, Clone)]
pub struct Sidp<'a> {
    /// Table offset of the structure.
    pub offset: usize,
    /// Stated length.
    pub length: u16,
    /// PCI segment.
    pub segment: u16,
    /// The devices; each scope's flags byte holds its properties.
    pub scopes: DeviceScopes<'a>,
}
