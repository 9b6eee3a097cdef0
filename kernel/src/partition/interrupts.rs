//! A partition's device interrupts: the guest's view of its device's configuration space
//! (PCI mechanism #1 at ports 0xCF8/0xCFC, trapped: the guest never reaches the physical
//! MSI capability), and the host side that injects the vector the guest chose.
//!
//! Path: at attach the hypervisor routes the device's MSI to a host vector of the
//! partition's own ([`HOST_VECTORS`], through the IOMMU's remapping tables) and writes that
//! message into the physical capability, disabled. The guest finds an MSI capability in
//! its view of the device (at 00:00.0), writes an address and its vector, and sets the
//! enable bit: only then is the physical MSI enabled. A device interrupt lands at the host
//! vector, whose handler only counts it and sends EOI; before the next guest entry one
//! pending interrupt is handed to the vCPU as a virtual interrupt with the guest's vector
//! (SVM V_IRQ: taken when the guest's RFLAGS.IF allows, no guest EOI needed). A storm
//! costs the host one counter increment per interrupt and the guest at most one
//! injection per entry.
#![deny(unsafe_code)]

use crate::iommu::interrupts::RoutedInterrupt;
use crate::msi::Msi;
use crate::pci::ConfigSpace;
use core::sync::atomic::{AtomicU64, Ordering};
use iommu::bits::Field;

/// Host vectors for partitions' device interrupts, one per partition slot.
pub const HOST_VECTORS: [u8; 4] = [40, 41, 42, 43];
static PENDING: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static TAKEN: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
/// Slots in use (bit n = slot n).
static SLOTS: AtomicU64 = AtomicU64::new(0);

fn take(slot: usize) {
    if let Some(p) = PENDING.get(slot) {
        p.fetch_add(1, Ordering::Relaxed);
        TAKEN[slot].fetch_add(1, Ordering::Relaxed);
    }
    crate::apic::eoi();
}
fn slot0() {
    take(0)
}
fn slot1() {
    take(1)
}
fn slot2() {
    take(2)
}
fn slot3() {
    take(3)
}
const HANDLERS: [fn(); 4] = [slot0, slot1, slot2, slot3];

/// The configuration-address port and the data port (PCI mechanism #1).
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// The data port (0xCFC-0xCFF).
pub const CONFIG_DATA: u16 = 0xCFC;
/// CONFIG_ADDRESS: enable bit.
const CA_ENABLE: Field = Field::bit(31);
/// CONFIG_ADDRESS: bus, device, function (bits 23:8).
const CA_BDF: Field = Field::new(8, 16);
/// CONFIG_ADDRESS: register (bits 7:2).
const CA_REGISTER: Field = Field::new(2, 6);
/// Where the guest finds its MSI capability.
const VIRTUAL_MSI_CAP: u16 = 0x40;
/// MSI control (bits 31:16 of the capability's first dword): enable, 64-bit capable.
const MSI_ENABLE: Field = Field::bit(16);
const MSI_64BIT: Field = Field::bit(23);
/// Status register: capabilities list present.
const STATUS_CAP_LIST: u32 = 1 << 20;

/// One partition's device interrupt: the guest's view and the host routing.
#[derive(Debug)]
pub struct DeviceInterrupt {
    slot: usize,
    physical: ConfigSpace,
    msi: Msi,
    /// The IOMMU routing (given back at destroy).
    pub routed: Option<RoutedInterrupt>,
    address_latch: u32,
    guest_address: u64,
    guest_data: u16,
    guest_enabled: bool,
    /// Interrupts injected into the guest.
    pub injected: u64,
    /// Interrupts dropped because the guest had MSI off or no valid vector.
    pub dropped: u64,
}

impl DeviceInterrupt {
    /// Claims a host vector slot and installs its handler; `None` when all are in use.
    pub fn claim(physical: ConfigSpace) -> Option<(DeviceInterrupt, u8)> {
        let msi = Msi::find(physical)?;
        let slot = (0..HOST_VECTORS.len())
            .find(|s| SLOTS.fetch_or(1 << s, Ordering::AcqRel) & (1 << s) == 0)?;
        PENDING[slot].store(0, Ordering::Relaxed);
        TAKEN[slot].store(0, Ordering::Relaxed);
        crate::arch::idt::register_handler(HOST_VECTORS[slot], HANDLERS[slot]);
        let d = DeviceInterrupt {
            slot,
            physical,
            msi,
            routed: None,
            address_latch: 0,
            guest_address: 0,
            guest_data: 0,
            guest_enabled: false,
            injected: 0,
            dropped: 0,
        };
        Some((d, HOST_VECTORS[slot]))
    }

    /// Writes the routed message into the physical capability, MSI still off.
    pub fn install(&mut self, routed: RoutedInterrupt) {
        self.msi.set_enabled(false);
        self.msi.write_message(routed.address, routed.data);
        self.routed = Some(routed);
    }

    /// Host interrupts taken at this partition's vector so far.
    pub fn taken(&self) -> u64 {
        TAKEN[self.slot].load(Ordering::Relaxed)
    }

    /// The vector the guest chose, when it enabled MSI with a valid one.
    pub fn guest_vector(&self) -> Option<u8> {
        let v = (self.guest_data & 0xFF) as u8;
        (self.guest_enabled && v >= 32 && self.guest_address >> 20 == 0xFEE).then_some(v)
    }

    /// One pending device interrupt to inject, if any: its guest vector. Interrupts that
    /// arrive while the guest has no valid vector are dropped (counted).
    pub fn next_injection(&mut self) -> Option<u8> {
        let pending = &PENDING[self.slot];
        if pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        match self.guest_vector() {
            Some(v) => {
                pending.fetch_sub(1, Ordering::Relaxed);
                self.injected += 1;
                Some(v)
            }
            None => {
                self.dropped += pending.swap(0, Ordering::Relaxed);
                None
            }
        }
    }

    /// A guest IN from `port` (`size` bytes): the emulated configuration space.
    pub fn io_read(&self, port: u16, size: u8) -> u32 {
        if port == CONFIG_ADDRESS && size == 4 {
            return self.address_latch;
        }
        let Some(offset) = self.data_offset(port) else {
            return u32::MAX;
        };
        let dword = self.config_read(offset & !3);
        let shift = u32::from(offset & 3) * 8;
        let mask = match size {
            1 => 0xFF,
            2 => 0xFFFF,
            _ => u32::MAX,
        };
        (dword >> shift) & mask
    }

    /// A guest OUT of `value` to `port` (`size` bytes).
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) {
        if port == CONFIG_ADDRESS && size == 4 {
            self.address_latch = value;
            return;
        }
        let Some(offset) = self.data_offset(port) else {
            return;
        };
        // Only whole dwords of the MSI capability are writable in the guest's view.
        if size != 4 || offset & 3 != 0 {
            return;
        }
        self.config_write(offset, value);
    }

    /// A guest's write of a whole configuration dword at `offset` (only the MSI
    /// capability's are writable; a Linux guest's configuration space,
    /// `platform::pci`, shows the same capability).
    pub fn config_write(&mut self, offset: u16, value: u32) {
        match offset.checked_sub(VIRTUAL_MSI_CAP) {
            Some(0) => {
                self.guest_enabled = MSI_ENABLE.is_set(u64::from(value));
                self.msi.set_enabled(self.guest_enabled && self.routed.is_some());
            }
            Some(4) => self.guest_address = (self.guest_address & !0xFFFF_FFFF) | u64::from(value),
            Some(8) => {
                self.guest_address = (self.guest_address & 0xFFFF_FFFF) | (u64::from(value) << 32)
            }
            Some(12) => self.guest_data = value as u16,
            _ => {}
        }
    }

    /// The register offset a data-port access reaches, for the guest's one device at
    /// 00:00.0 with the enable bit set; `None` otherwise (reads all ones, writes ignored).
    fn data_offset(&self, port: u16) -> Option<u16> {
        let byte = port.checked_sub(CONFIG_DATA).filter(|b| *b < 4)?;
        let latch = u64::from(self.address_latch);
        if !CA_ENABLE.is_set(latch) || CA_BDF.get(latch) != 0 {
            return None;
        }
        Some((CA_REGISTER.get(latch) as u16) * 4 + byte)
    }

    /// The guest's view of one configuration dword.
    pub fn config_read(&self, offset: u16) -> u32 {
        match offset {
            0x00 | 0x08 | 0x2C => self.physical.read32(offset),
            0x04 => STATUS_CAP_LIST | 0x6,
            0x34 => u32::from(VIRTUAL_MSI_CAP),
            o if o == VIRTUAL_MSI_CAP => {
                let control =
                    MSI_64BIT.encode(1) | MSI_ENABLE.encode(u64::from(self.guest_enabled));
                0x05 | control as u32
            }
            o if o == VIRTUAL_MSI_CAP + 4 => self.guest_address as u32,
            o if o == VIRTUAL_MSI_CAP + 8 => (self.guest_address >> 32) as u32,
            o if o == VIRTUAL_MSI_CAP + 12 => u32::from(self.guest_data),
            _ => 0,
        }
    }

    /// Turns the physical MSI off and gives the slot back (the routing is returned by
    /// the caller to the IOMMU).
    pub fn release(&mut self) -> Option<RoutedInterrupt> {
        self.msi.set_enabled(false);
        SLOTS.fetch_and(!(1 << self.slot), Ordering::AcqRel);
        PENDING[self.slot].store(0, Ordering::Relaxed);
        self.routed.take()
    }
}
