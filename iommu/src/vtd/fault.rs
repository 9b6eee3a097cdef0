//! Primary fault recording: the fault record layout, reasons in words, fault counters and a
//! rate limiter so a fault storm cannot drown the console.

use core::fmt;

use crate::error::HwError;
use crate::platform::{FrameAllocator, Mmio, PhysAddr, PhysMemory};

use super::regs;
use super::unit::VtdUnit;
use crate::acpi::pci::Bdf;
use crate::bits::{field, Field};

/// Fault record low qword of an interrupt-remapping fault: the interrupt index (FI 63:48).
const FRCD_IR_INDEX: Field = Field::new(48, 16);
/// The fault reasons of interrupt requests (VT-d spec: 0x20-0x27).
const INTERRUPT_REASONS: core::ops::RangeInclusive<u8> = 0x20..=0x27;

/// One decoded fault record (VT-d spec 11.4.14, 128 bits at CAP.FRO + 16 * index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// Which fault recording register held it.
    pub index: usize,
    /// Requester id of the faulting request (bus << 8 | devfn).
    pub source: u16,
    /// The faulting page address (bits 63:12 of the record's low word).
    pub address: PhysAddr,
    /// Fault reason code (see [`fault_reason`]).
    pub reason: u8,
    /// Whether the request was a read (T = 1) rather than a write (T = 0).
    pub is_read: bool,
    /// The request's PASID, when it carried one (PP = 1).
    pub pasid: Option<u32>,
    /// For an interrupt request the unit refused (reasons 0x20-0x27): the interrupt
    /// index (handle) it named. The address and T fields mean nothing then.
    pub interrupt_index: Option<u16>,
}

impl FaultRecord {
    /// Decodes the record's two 64-bit halves; `None` when its F (fault) bit is clear.
    pub fn decode(index: usize, lo: u64, hi: u64) -> Option<Self> {
        if hi >> 63 == 0 {
            return None;
        }
        let pasid_present = field(hi, 31, 1) != 0;
        let reason = field(hi, 32, 8) as u8;
        let interrupt = INTERRUPT_REASONS.contains(&reason);
        Some(FaultRecord {
            index,
            source: field(hi, 0, 16) as u16,
            address: lo & !0xFFF,
            reason,
            is_read: field(hi, 62, 1) != 0,
            pasid: pasid_present.then(|| field(hi, 40, 20) as u32),
            interrupt_index: interrupt.then(|| FRCD_IR_INDEX.get(lo) as u16),
        })
    }

    /// The reason in words.
    pub fn reason_text(&self) -> &'static str {
        fault_reason(self.reason)
    }

    /// The source id as bus:device.function.
    pub fn bdf(&self) -> Bdf {
        Bdf::from_id(self.source)
    }
}

impl fmt::Display for FaultRecord {
    /// One log line: "DMA read fault from 00:03.0 at 0x7000000: reason 0x6 (read from ...)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.interrupt_index {
            return write!(
                f,
                "interrupt request refused from {} (index {index:#x}): reason {:#x} ({})",
                self.bdf(),
                self.reason,
                self.reason_text()
            );
        }
        write!(
            f,
            "DMA {} fault from {} at {:#x}: reason {:#x} ({})",
            if self.is_read { "read" } else { "write" },
            self.bdf(),
            self.address,
            self.reason,
            self.reason_text()
        )?;
        if let Some(pasid) = self.pasid {
            write!(f, ", PASID {pasid:#x}")?;
        }
        Ok(())
    }
}

/// Legacy-mode fault reasons (VT-d spec, appendix "Non-recoverable Fault Reason Encodings").
const REASONS: &[(u8, &str)] = &[
    (0x1, "root entry not present"),
    (0x2, "context entry not present"),
    (0x3, "invalid context entry (bad translation type or address width)"),
    (0x4, "address beyond the domain's address width"),
    (0x5, "write to a page without write permission (or not present)"),
    (0x6, "read from a page without read permission (or not present)"),
    (0x7, "second-level paging entry could not be read"),
    (0x8, "root table address could not be read"),
    (0x9, "context table address could not be read"),
    (0xA, "reserved bit set in root entry"),
    (0xB, "reserved bit set in context entry"),
    (0xC, "reserved bit set in second-level paging entry"),
    (0xD, "request blocked by the context entry's translation type"),
    (0x20, "interrupt: reserved field in remappable request"),
    (0x21, "interrupt: index beyond the remapping table size"),
    (0x22, "interrupt: remapping table entry not present"),
    (0x23, "interrupt: remapping table could not be read"),
    (0x24, "interrupt: reserved field in remapping table entry"),
    (0x25, "interrupt: compatibility-format request blocked"),
    (0x26, "interrupt: source id verification failed"),
    (0x27, "interrupt: posted-interrupt descriptor could not be read"),
];

/// A fault reason code in words ("unknown fault reason" for codes this table lacks).
pub fn fault_reason(code: u8) -> &'static str {
    REASONS
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, text)| *text)
        .unwrap_or("unknown fault reason")
}

/// Running totals of what the fault handler has seen since the unit was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounters {
    /// Fault records read and cleared.
    pub records: u64,
    /// Of those, faulting reads.
    pub reads: u64,
    /// Of those, faulting writes.
    pub writes: u64,
    /// Times the unit reported primary fault overflow (faults lost because every record was full).
    pub overflows: u64,
    /// Invalidation-queue errors observed and cleared.
    pub queue_errors: u64,
}

/// What one pass over the fault registers found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultScan {
    /// Records read and cleared in this pass.
    pub records: u32,
    /// Whether primary fault overflow was set (and has been cleared).
    pub overflow: bool,
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> VtdUnit<R, P> {
    /// Reads every fault recording register (CAP.NFR + 1 of them, starting at FSTS.FRI),
    /// hands each pending record to `sink`, and clears it (F is write-1-to-clear; a 32-bit
    /// write of bit 31 at the record's offset + 12, never a 64-bit write). Clears and counts
    /// primary fault overflow. Call from the fault interrupt or a poll loop.
    pub fn handle_faults(&mut self, mut sink: impl FnMut(&FaultRecord)) -> FaultScan {
        let mut scan = FaultScan::default();
        let fsts = self.mmio.read32(regs::FSTS);
        let count = self.cap.fault_record_count();
        let first = field(u64::from(fsts), 8, 8) as usize % count;
        let base = self.cap.fault_record_offset();
        // PPF clear: no record holds a fault, so skip reading them (a storm stays cheap).
        let pending = if fsts & regs::FSTS_PPF != 0 { count } else { 0 };
        for k in 0..pending {
            let index = (first + k) % count;
            let at = base + index * 16;
            let hi = self.mmio.read64(at + 8);
            if hi >> 63 == 0 {
                continue;
            }
            let lo = self.mmio.read64(at);
            self.mmio.write32(at + 12, 1 << 31);
            if let Some(record) = FaultRecord::decode(index, lo, hi) {
                self.faults.records += 1;
                if record.is_read {
                    self.faults.reads += 1;
                } else {
                    self.faults.writes += 1;
                }
                scan.records += 1;
                sink(&record);
            }
        }
        let fsts = self.mmio.read32(regs::FSTS);
        if fsts & regs::FSTS_PFO != 0 {
            self.mmio.write32(regs::FSTS, regs::FSTS_PFO);
            self.faults.overflows += 1;
            scan.overflow = true;
        }
        scan
    }

    /// Running fault totals.
    pub fn fault_counters(&self) -> FaultCounters {
        self.faults
    }

    /// Sends fault events as an MSI with `vector` to the local APIC `apic_id` (fixed
    /// delivery, physical destination) and unmasks them. All four registers are 32-bit and
    /// written with 32-bit accesses. Kept and re-applied by `enable`.
    pub fn program_fault_interrupt(&mut self, vector: u8, apic_id: u32) -> Result<(), HwError> {
        let (_, ecap) = self.capabilities();
        if apic_id > 0xFF && !ecap.extended_interrupt_mode() {
            return Err(HwError::Unsupported {
                what: "an APIC id above 255 without x2APIC mode (ECAP.EIM)",
            });
        }
        self.mmio.write32(regs::FECTL, regs::FECTL_IM);
        self.mmio.write32(regs::FEDATA, u32::from(vector));
        self.mmio.write32(regs::FEADDR, 0xFEE0_0000 | ((apic_id & 0xFF) << 12));
        self.mmio.write32(regs::FEUADDR, apic_id & !0xFF);
        self.mmio.write32(regs::FECTL, 0);
        self.fault_msi = Some((vector, apic_id));
        Ok(())
    }

    /// Masks the fault event interrupt (faults are still recorded).
    pub fn mask_fault_interrupt(&mut self) {
        self.mmio.write32(regs::FECTL, regs::FECTL_IM);
    }
}
