//! Event records: the codes, the flags field and the decoded [`Event`] with its words.
//!
//! Layout per the AMD IOMMU specification: DeviceID in bits 15:0 of the first quadword,
//! PASID 19:16 in bits 19:16, the tag (DomainID, or PASID 15:0) in 47:32, the flags in
//! 59:48 and the event code in 63:60; the address is the second quadword.

use core::fmt;

use crate::acpi::pci::Bdf;
use crate::invalidate::DomainId;

/// ILLEGAL_DEV_TABLE_ENTRY event code.
pub const CODE_ILLEGAL_DEV_TABLE_ENTRY: u8 = 0x1;
/// IO_PAGE_FAULT event code.
pub const CODE_IO_PAGE_FAULT: u8 = 0x2;
/// DEV_TAB_HARDWARE_ERROR event code.
pub const CODE_DEV_TAB_HARDWARE_ERROR: u8 = 0x3;
/// PAGE_TAB_HARDWARE_ERROR event code.
pub const CODE_PAGE_TAB_HARDWARE_ERROR: u8 = 0x4;
/// ILLEGAL_COMMAND_ERROR event code.
pub const CODE_ILLEGAL_COMMAND: u8 = 0x5;
/// COMMAND_HARDWARE_ERROR event code.
pub const CODE_COMMAND_HARDWARE_ERROR: u8 = 0x6;
/// IOTLB_INV_TIMEOUT event code.
pub const CODE_IOTLB_INV_TIMEOUT: u8 = 0x7;
/// INVALID_DEVICE_REQUEST event code.
pub const CODE_INVALID_DEVICE_REQUEST: u8 = 0x8;
/// INVALID_PPR_REQUEST event code.
pub const CODE_INVALID_PPR_REQUEST: u8 = 0x9;

/// The 12-bit flags field of an event (bits 27:16 of its second dword).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFlags(pub u16);

impl EventFlags {
    fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }
    /// GN: the access carried a PASID (guest translation); the tag field is a PASID.
    pub fn guest(self) -> bool {
        self.bit(0)
    }
    /// NX: the access was an instruction fetch.
    pub fn execute(self) -> bool {
        self.bit(1)
    }
    /// US: the access was at user privilege.
    pub fn user(self) -> bool {
        self.bit(2)
    }
    /// I: the access was an interrupt request, not a memory access.
    pub fn interrupt(self) -> bool {
        self.bit(3)
    }
    /// PR: the translation was present (so the fault is a permission problem).
    pub fn present(self) -> bool {
        self.bit(4)
    }
    /// RW: the access was a write.
    pub fn write(self) -> bool {
        self.bit(5)
    }
    /// PE: the permissions did not allow the access.
    pub fn permission(self) -> bool {
        self.bit(6)
    }
    /// RZ: a reserved bit was set in a table entry.
    pub fn reserved_bit(self) -> bool {
        self.bit(7)
    }
    /// TR: the access was a translation request (ATS).
    pub fn translation_request(self) -> bool {
        self.bit(8)
    }
    /// Type (bits 10:9) of a hardware error: 1 master abort, 2 target abort, 3 data error.
    pub fn hw_error_type(self) -> u8 {
        ((self.0 >> 9) & 0x3) as u8
    }
}

impl fmt::Display for EventFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.write() { "write" } else { "read" })?;
        let words: [(bool, &str); 8] = [
            (self.interrupt(), "interrupt"),
            (self.present(), "present"),
            (self.permission(), "permission denied"),
            (self.reserved_bit(), "reserved bit set"),
            (self.translation_request(), "translation request"),
            (self.guest(), "with PASID"),
            (self.user(), "user"),
            (self.execute(), "execute"),
        ];
        for (on, word) in words {
            if on {
                write!(f, ", {word}")?;
            }
        }
        write!(f, " [flags {:#05x}]", self.0)
    }
}

/// One decoded event record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A device table entry had a reserved or illegal value.
    IllegalDevTableEntry {
        /// Requesting device.
        device: u16,
        /// The address the device accessed.
        address: u64,
        /// What kind of access.
        flags: EventFlags,
    },
    /// A DMA was refused by the page tables (not present, or not permitted).
    IoPageFault {
        /// Requesting device.
        device: u16,
        /// The DomainID the translation used (`None` when the access carried a PASID).
        domain: Option<DomainId>,
        /// The PASID, when GN is set.
        pasid: Option<u32>,
        /// The faulting IOVA.
        address: u64,
        /// What kind of access and why it faulted.
        flags: EventFlags,
    },
    /// Reading the device table failed on the bus.
    DevTabHardwareError {
        /// Requesting device.
        device: u16,
        /// The device table address that failed.
        address: u64,
        /// Including the bus error type.
        flags: EventFlags,
    },
    /// Reading a page table failed on the bus.
    PageTabHardwareError {
        /// Requesting device.
        device: u16,
        /// The domain whose table was read.
        domain: DomainId,
        /// The page-table address that failed.
        address: u64,
        /// Including the bus error type.
        flags: EventFlags,
    },
    /// The IOMMU met a command it does not accept; it stops processing commands.
    IllegalCommand {
        /// Physical address of the offending command.
        address: u64,
    },
    /// Fetching a command failed on the bus.
    CommandHardwareError {
        /// The address that failed.
        address: u64,
        /// Including the bus error type.
        flags: EventFlags,
    },
    /// A device did not answer an IOTLB invalidation in time.
    IotlbInvTimeout {
        /// The device.
        device: u16,
        /// Physical address of the invalidation command.
        address: u64,
    },
    /// A device made a request the IOMMU cannot serve in its configuration.
    InvalidDeviceRequest {
        /// Requesting device.
        device: u16,
        /// The address of the request.
        address: u64,
        /// What kind of request.
        flags: EventFlags,
    },
    /// A peripheral page request was malformed.
    InvalidPprRequest {
        /// Requesting device.
        device: u16,
        /// The address of the request.
        address: u64,
        /// What kind of request.
        flags: EventFlags,
    },
    /// A code this driver does not decode (kept raw).
    Other {
        /// Bits 63:60 of the first quadword.
        code: u8,
        /// The record as read.
        raw: [u64; 2],
    },
}

impl Event {
    /// Decodes a record from its two quadwords (layout per the AMD IOMMU specification:
    /// DeviceID 15:0, tag 47:32, flags 59:48, code 63:60, address in the second quadword).
    pub fn decode(raw: [u64; 2]) -> Event {
        let [q0, address] = raw;
        let code = (q0 >> 60) as u8;
        let device = q0 as u16;
        let tag = (q0 >> 32) as u16;
        let flags = EventFlags(((q0 >> 48) & 0xFFF) as u16);
        match code {
            CODE_ILLEGAL_DEV_TABLE_ENTRY => Event::IllegalDevTableEntry { device, address, flags },
            CODE_IO_PAGE_FAULT => {
                let (domain, pasid) = if flags.guest() {
                    let high = ((q0 >> 16) & 0xF) as u32;
                    (None, Some((high << 16) | u32::from(tag)))
                } else {
                    (Some(tag), None)
                };
                Event::IoPageFault { device, domain, pasid, address, flags }
            }
            CODE_DEV_TAB_HARDWARE_ERROR => Event::DevTabHardwareError { device, address, flags },
            CODE_PAGE_TAB_HARDWARE_ERROR => {
                Event::PageTabHardwareError { device, domain: tag, address, flags }
            }
            CODE_ILLEGAL_COMMAND => Event::IllegalCommand { address },
            CODE_COMMAND_HARDWARE_ERROR => Event::CommandHardwareError { address, flags },
            CODE_IOTLB_INV_TIMEOUT => Event::IotlbInvTimeout { device, address },
            CODE_INVALID_DEVICE_REQUEST => Event::InvalidDeviceRequest { device, address, flags },
            CODE_INVALID_PPR_REQUEST => Event::InvalidPprRequest { device, address, flags },
            code => Event::Other { code, raw },
        }
    }

    /// The event code (bits 63:60 of the first quadword).
    pub fn code(&self) -> u8 {
        match self {
            Event::IllegalDevTableEntry { .. } => CODE_ILLEGAL_DEV_TABLE_ENTRY,
            Event::IoPageFault { .. } => CODE_IO_PAGE_FAULT,
            Event::DevTabHardwareError { .. } => CODE_DEV_TAB_HARDWARE_ERROR,
            Event::PageTabHardwareError { .. } => CODE_PAGE_TAB_HARDWARE_ERROR,
            Event::IllegalCommand { .. } => CODE_ILLEGAL_COMMAND,
            Event::CommandHardwareError { .. } => CODE_COMMAND_HARDWARE_ERROR,
            Event::IotlbInvTimeout { .. } => CODE_IOTLB_INV_TIMEOUT,
            Event::InvalidDeviceRequest { .. } => CODE_INVALID_DEVICE_REQUEST,
            Event::InvalidPprRequest { .. } => CODE_INVALID_PPR_REQUEST,
            Event::Other { code, .. } => *code,
        }
    }
}

fn bus_error(flags: EventFlags) -> &'static str {
    match flags.hw_error_type() {
        1 => "master abort",
        2 => "target abort",
        3 => "data error",
        _ => "unknown bus error",
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Event::IllegalDevTableEntry { device, address, flags } => write!(
                f,
                "ILLEGAL_DEV_TABLE_ENTRY device {} address {address:#x} ({flags})",
                Bdf::from_id(device)
            ),
            Event::IoPageFault { device, domain, pasid, address, flags } => {
                write!(f, "IO_PAGE_FAULT device {} ", Bdf::from_id(device))?;
                match (domain, pasid) {
                    (Some(d), _) => write!(f, "domain {d} ")?,
                    (None, Some(p)) => write!(f, "pasid {p:#x} ")?,
                    (None, None) => {}
                }
                write!(f, "address {address:#x} ({flags})")
            }
            Event::DevTabHardwareError { device, address, flags } => write!(
                f,
                "DEV_TAB_HARDWARE_ERROR device {} table address {address:#x}: {} ({flags})",
                Bdf::from_id(device),
                bus_error(flags)
            ),
            Event::PageTabHardwareError { device, domain, address, flags } => write!(
                f,
                "PAGE_TAB_HARDWARE_ERROR device {} domain {domain} table address {address:#x}: {} ({flags})",
                Bdf::from_id(device),
                bus_error(flags)
            ),
            Event::IllegalCommand { address } => {
                write!(f, "ILLEGAL_COMMAND_ERROR command at {address:#x}")
            }
            Event::CommandHardwareError { address, flags } => write!(
                f,
                "COMMAND_HARDWARE_ERROR address {address:#x}: {} ({flags})",
                bus_error(flags)
            ),
            Event::IotlbInvTimeout { device, address } => write!(
                f,
                "IOTLB_INV_TIMEOUT device {} command at {address:#x}",
                Bdf::from_id(device)
            ),
            Event::InvalidDeviceRequest { device, address, flags } => write!(
                f,
                "INVALID_DEVICE_REQUEST device {} address {address:#x} ({flags})",
                Bdf::from_id(device)
            ),
            Event::InvalidPprRequest { device, address, flags } => write!(
                f,
                "INVALID_PPR_REQUEST device {} address {address:#x} ({flags})",
                Bdf::from_id(device)
            ),
            Event::Other { code, raw } => {
                write!(f, "event code {code:#x} raw {:#018x} {:#018x}", raw[0], raw[1])
            }
        }
    }
}
