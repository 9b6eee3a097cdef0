//! A partition's device interrupts: the guest's view of its device's configuration space
//! (PCI mechanism #1 at ports 0xCF8/0xCFC, trapped: the guest never reaches the physical
//! MSI capability), and the host side that injects the vector the guest chose.
//!
//! Path: at attach the hypervisor routes the device's MSI to a host vector claimed from
//! the pool ([`HostVector`], through the IOMMU's remapping tables) and writes that
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

/// The pool of host vectors for partitions' device interrupts: every routed MSI vector
/// and MSI-X entry of every partition gets one of its own (claimed at attach, given back
/// at destroy).
pub const POOL_FIRST: u8 = 48;
/// How many vectors the pool holds (48..80: the IDT's device gates above the host's own).
pub const POOL_SIZE: usize = 32;
static PENDING: [AtomicU64; POOL_SIZE] = [const { AtomicU64::new(0) }; POOL_SIZE];
static TAKEN: [AtomicU64; POOL_SIZE] = [const { AtomicU64::new(0) }; POOL_SIZE];
/// Pool vectors in use (bit n = vector POOL_FIRST + n).
static IN_USE: AtomicU64 = AtomicU64::new(0);

/// A device interrupt at pool vector `I`: counted as pending, EOI. That is all a storm
/// costs the host per interrupt; the guest is offered what is pending once per entry.
fn take<const I: usize>() {
    PENDING[I].fetch_add(1, Ordering::Relaxed);
    TAKEN[I].fetch_add(1, Ordering::Relaxed);
    crate::apic::eoi();
}

macro_rules! handlers {
    ($($i:literal)*) => { [$(take::<$i> as fn()),*] };
}
const HANDLERS: [fn(); POOL_SIZE] = handlers!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
);

/// One host vector of the pool, owned by one device message until [`HostVector::release`].
#[derive(Debug)]
pub struct HostVector {
    slot: usize,
}

impl HostVector {
    /// Claims a free pool vector (its counters cleared, its handler installed); `None`
    /// when all [`POOL_SIZE`] are in use.
    pub fn claim() -> Option<HostVector> {
        let slot =
            (0..POOL_SIZE).find(|s| IN_USE.fetch_or(1 << s, Ordering::AcqRel) & (1 << s) == 0)?;
        PENDING[slot].store(0, Ordering::Relaxed);
        TAKEN[slot].store(0, Ordering::Relaxed);
        crate::arch::idt::register_handler(POOL_FIRST + slot as u8, HANDLERS[slot]);
        Some(HostVector { slot })
    }

    /// The host vector.
    pub fn vector(&self) -> u8 {
        POOL_FIRST + self.slot as u8
    }

    /// Interrupts taken at this vector since it was claimed.
    pub fn taken(&self) -> u64 {
        TAKEN[self.slot].load(Ordering::Relaxed)
    }

    /// Interrupts taken and not yet handed on.
    pub fn pending(&self) -> u64 {
        PENDING[self.slot].load(Ordering::Relaxed)
    }

    /// Takes the pending count (leaving 0).
    pub fn take_pending(&self) -> u64 {
        PENDING[self.slot].swap(0, Ordering::Relaxed)
    }

    /// Takes one pending interrupt, if any.
    pub fn take_one(&self) -> bool {
        PENDING[self.slot]
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Gives the vector back to the pool (its source must already be unrouted).
    pub fn release(self) {
        PENDING[self.slot].store(0, Ordering::Relaxed);
        IN_USE.fetch_and(!(1 << self.slot), Ordering::AcqRel);
    }
}

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
    host: Option<HostVector>,
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
    taken_at_release: u64,
}

impl DeviceInterrupt {
    /// Claims a host vector from the pool for `physical`'s MSI; `None` when the function
    /// has no MSI capability or the pool is empty.
    pub fn claim(physical: ConfigSpace) -> Option<(DeviceInterrupt, u8)> {
        let msi = Msi::find(physical)?;
        let host = HostVector::claim()?;
        let vector = host.vector();
        let d = DeviceInterrupt {
            host: Some(host),
            physical,
            msi,
            routed: None,
            address_latch: 0,
            guest_address: 0,
            guest_data: 0,
            guest_enabled: false,
            injected: 0,
            dropped: 0,
            taken_at_release: 0,
        };
        Some((d, vector))
    }

    /// Writes the routed message into the physical capability, MSI still off.
    pub fn install(&mut self, routed: RoutedInterrupt) {
        self.msi.set_enabled(false);
        self.msi.write_message(routed.address, routed.data);
        self.routed = Some(routed);
    }

    /// Host interrupts taken at this device's vector so far (until its release).
    pub fn taken(&self) -> u64 {
        self.host.as_ref().map_or(self.taken_at_release, HostVector::taken)
    }

    /// The vector the guest chose, when it enabled MSI with a valid one.
    pub fn guest_vector(&self) -> Option<u8> {
        let v = (self.guest_data & 0xFF) as u8;
        (self.guest_enabled && v >= 32 && self.guest_address >> 20 == 0xFEE).then_some(v)
    }

    /// One pending device interrupt to inject, if any: its guest vector. Interrupts that
    /// arrive while the guest has no valid vector are dropped (counted).
    pub fn next_injection(&mut self) -> Option<u8> {
        let host = self.host.as_ref()?;
        if host.pending() == 0 {
            return None;
        }
        match self.guest_vector() {
            Some(v) => {
                host.take_one();
                self.injected += 1;
                Some(v)
            }
            None => {
                self.dropped += host.take_pending();
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

    /// Turns the physical MSI off and gives the host vector back (the routing is
    /// returned by the caller to the IOMMU).
    pub fn release(&mut self) -> Option<RoutedInterrupt> {
        self.msi.set_enabled(false);
        self.taken_at_release = self.taken();
        if let Some(h) = self.host.take() {
            h.release();
        }
        self.routed.take()
    }
}
