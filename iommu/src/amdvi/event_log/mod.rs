//! The event log: a ring the IOMMU writes 128-bit event records into (faults, illegal
//! entries and commands, hardware errors), and their decoding into words.
//!
//! The driver owns the head; the IOMMU owns the tail. QEMU 7.2 never writes an event, so
//! nothing here may depend on events arriving.

use crate::platform::{Mmio, PhysAddr, PhysMemory};
use alloc::vec::Vec;

use super::regs;

pub mod record;

pub use record::{Event, EventFlags};

/// Bytes per event record.
pub const EVENT_SIZE: u64 = 16;
/// EventLen used by this driver: 2^8 = 256 records, exactly one 4 KiB frame.
pub const EVENT_LEN_LOG2: u64 = 8;

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
