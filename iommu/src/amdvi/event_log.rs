//! The event log: a ring the IOMMU writes 128-bit event records into (faults, illegal
//! entries and commands, hardware errors), and their decoding into words.
//!
//! The driver owns the head; the IOMMU owns the tail. QEMU 7.2 never writes an event, so
//! nothing here may depend on events arriving.

use alloc::vec::Vec;
use core::fmt;

use crate::invalidate::DomainId;
use crate::platform::{Mmio, PhysAddr, PhysMemory};

use super::regs;

/// Bytes per event record.
pub const EVENT_SIZE: u64 = 16;
/// EventLen used by this driver: 2^8 = 256 records, exactly one 4 KiB frame.
pub const EVENT_LEN_LOG2: u64 = 8;

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
            CODE_ILLEGAL_DEV_TABLE_ENTRY => Event::IllegalDevTableEntry {
                device,
                address,
                flags,
            },
            CODE_IO_PAGE_FAULT => {
                let (domain, pasid) = if flags.guest() {
                    let high = ((q0 >> 16) & 0xF) as u32;
                    (None, Some((high << 16) | u32::from(tag)))
                } else {
                    (Some(tag), None)
                };
                Event::IoPageFault {
                    device,
                    domain,
                    pasid,
                    address,
                    flags,
                }
            }
            CODE_DEV_TAB_HARDWARE_ERROR => Event::DevTabHardwareError {
                device,
                address,
                flags,
            },
            CODE_PAGE_TAB_HARDWARE_ERROR => Event::PageTabHardwareError {
                device,
                domain: tag,
                address,
                flags,
            },
            CODE_ILLEGAL_COMMAND => Event::IllegalCommand { address },
            CODE_COMMAND_HARDWARE_ERROR => Event::CommandHardwareError { address, flags },
            CODE_IOTLB_INV_TIMEOUT => Event::IotlbInvTimeout { device, address },
            CODE_INVALID_DEVICE_REQUEST => Event::InvalidDeviceRequest {
                device,
                address,
                flags,
            },
            CODE_INVALID_PPR_REQUEST => Event::InvalidPprRequest {
                device,
                address,
                flags,
            },
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

/// A PCI requester id as bus:device.function.
struct Bdf(u16);

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self.0;
        write!(f, "{:02x}:{:02x}.{}", id >> 8, (id >> 3) & 0x1F, id & 0x7)
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
                Bdf(device)
            ),
            Event::IoPageFault { device, domain, pasid, address, flags } => {
                write!(f, "IO_PAGE_FAULT device {} ", Bdf(device))?;
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
                Bdf(device),
                bus_error(flags)
            ),
            Event::PageTabHardwareError { device, domain, address, flags } => write!(
                f,
                "PAGE_TAB_HARDWARE_ERROR device {} domain {domain} table address {address:#x}: {} ({flags})",
                Bdf(device),
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
                Bdf(device)
            ),
            Event::InvalidDeviceRequest { device, address, flags } => write!(
                f,
                "INVALID_DEVICE_REQUEST device {} address {address:#x} ({flags})",
                Bdf(device)
            ),
            Event::InvalidPprRequest { device, address, flags } => write!(
                f,
                "INVALID_PPR_REQUEST device {} address {address:#x} ({flags})",
                Bdf(device)
            ),
            Event::Other { code, raw } => {
                write!(f, "event code {code:#x} raw {:#018x} {:#018x}", raw[0], raw[1])
            }
        }
    }
}

/// What the driver has seen in the event log since setup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCounters {
    /// Records decoded, by event code (index = code).
    pub by_code: [u64; 16],
    /// Records decoded in total.
    pub total: u64,
    /// Times the log overflowed (events were lost) and logging was restarted.
    pub overflows: u64,
    /// Records still zero when read (the tail moved before the data landed).
    pub unwritten: u64,
    /// Tail register values outside the ring, ignored.
    pub bad_tail: u64,
}

/// The event log ring in one frame; the driver's head and the decode loop.
#[derive(Debug)]
pub struct EventLog {
    base: PhysAddr,
    head: u64,
}

/// Re-reads of a record still zero before it is counted as unwritten.
const UNWRITTEN_RETRIES: u32 = 1000;

impl EventLog {
    /// Size of the ring in bytes.
    pub const LEN: u64 = EVENT_SIZE << EVENT_LEN_LOG2;

    /// A log in the zeroed frame at `base`, empty.
    pub fn new(base: PhysAddr) -> Self {
        Self { base, head: 0 }
    }
    /// Physical address of the ring.
    pub fn base(&self) -> PhysAddr {
        self.base
    }
    /// The value for the Event Log Base Address register (base | EventLen << 56).
    pub fn base_register_value(&self) -> u64 {
        self.base | (EVENT_LEN_LOG2 << regs::RING_LENGTH_SHIFT)
    }
    /// The driver's head: byte offset of the next record to read.
    pub fn head(&self) -> u64 {
        self.head
    }
    /// Resets the head to 0 (with logging disabled, head and tail registers zeroed).
    pub fn reset(&mut self) {
        self.head = 0;
    }

    /// Reads and decodes every record from the head to the IOMMU's tail, zeroes each
    /// (so a stale record is never read twice), and writes the new head back.
    pub fn drain(
        &mut self,
        regs: &mut impl Mmio,
        mem: &mut impl PhysMemory,
        counters: &mut EventCounters,
        out: &mut Vec<Event>,
    ) {
        let tail = regs.read64(regs::EVENT_TAIL) & regs::RING_POINTER_MASK;
        if tail >= Self::LEN {
            counters.bad_tail += 1;
            return;
        }
        let start = self.head;
        while self.head != tail {
            let at = self.base + self.head;
            let mut raw = [mem.read_u64(at), mem.read_u64(at + 8)];
            let mut retries = 0;
            while raw[0] == 0 && raw[1] == 0 && retries < UNWRITTEN_RETRIES {
                raw = [mem.read_u64(at), mem.read_u64(at + 8)];
                retries += 1;
            }
            if raw == [0, 0] {
                counters.unwritten += 1;
            } else {
                let event = Event::decode(raw);
                counters.by_code[usize::from(event.code() & 0xF)] += 1;
                counters.total += 1;
                out.push(event);
            }
            mem.write_u64(at, 0);
            mem.write_u64(at + 8, 0);
            self.head = (self.head + EVENT_SIZE) % Self::LEN;
        }
        if self.head != start {
            mem.flush_for_device(self.base, Self::LEN);
            regs.write64(regs::EVENT_HEAD, self.head);
        }
    }
}
