//! AMD-Vi MMIO register offsets, control and status bits, and the Extended Feature
//! Register (EFR) decoded into named fields and words.
//!
//! Every register is reached with a 4- or 8-byte access through [`Mmio`](crate::platform::Mmio);
//! the base registers are written with one 8-byte access (QEMU latches the size fields
//! only on a full-width write).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Device Table Base Address register: base in bits 51:12, size in 4 KiB units minus one in 8:0.
pub const DEVICE_TABLE_BASE: usize = 0x0000;
/// Command Buffer Base Address register: base in 51:12, ComLen (log2 entries) in 59:56.
pub const COMMAND_BUFFER_BASE: usize = 0x0008;
/// Event Log Base Address register: base in 51:12, EventLen (log2 entries) in 59:56.
pub const EVENT_LOG_BASE: usize = 0x0010;
/// The first SMI filter register (8 bytes apart, [`Efr::smi_filter_registers`] of them):
/// SmiDID in bits 15:0, SmiDV (the id is valid: that device may send SMIs) bit 16, SmiFLock
/// (read-only until reset) bit 17.
pub const SMI_FILTER_BASE: usize = 0x0060;
/// IOMMU Control register (see [`Control`]).
pub const CONTROL: usize = 0x0018;
/// Exclusion Range Base register (bit 0 ExEn); zero means no exclusion range.
pub const EXCLUSION_BASE: usize = 0x0020;
/// Exclusion Range Limit register.
pub const EXCLUSION_LIMIT: usize = 0x0028;
/// Extended Feature Register (see [`Efr`]).
pub const EXTENDED_FEATURES: usize = 0x0030;
/// Command Buffer Head Pointer (byte offset in bits 18:4), advanced by the IOMMU.
pub const COMMAND_HEAD: usize = 0x2000;
/// Command Buffer Tail Pointer (byte offset in bits 18:4), advanced by software.
pub const COMMAND_TAIL: usize = 0x2008;
/// Event Log Head Pointer (byte offset in bits 18:4), advanced by software.
pub const EVENT_HEAD: usize = 0x2010;
/// Event Log Tail Pointer (byte offset in bits 18:4), advanced by the IOMMU.
pub const EVENT_TAIL: usize = 0x2018;
/// IOMMU Status register (see [`Status`]); its event bits are write-1-to-clear.
pub const STATUS: usize = 0x2020;

/// The bits of a head or tail pointer register that hold the byte offset (18:4).
pub const RING_POINTER_MASK: u64 = 0x0007_FFF0;
/// The bits of a base register that hold a 4 KiB-aligned physical address (51:12).
pub const BASE_ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Shift of the ComLen / EventLen field (59:56) in the command buffer and event log bases.
pub const RING_LENGTH_SHIFT: u32 = 56;

bitflags::bitflags! {
    /// IOMMU Control register bits (offset 0x18).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Control: u64 {
        /// Translation and interrupt remapping on.
        const IOMMU_EN = 1 << 0;
        /// HyperTransport tunnel translation.
        const HT_TUN_EN = 1 << 1;
        /// The IOMMU writes events into the event log.
        const EVENT_LOG_EN = 1 << 2;
        /// Interrupt when an event is logged.
        const EVENT_INT_EN = 1 << 3;
        /// Interrupt when a COMPLETION_WAIT with I=1 completes.
        const COM_WAIT_INT_EN = 1 << 4;
        /// Posted writes may pass (ordering relaxation).
        const PASS_PW = 1 << 8;
        /// Response posted writes may pass.
        const RES_PASS_PW = 1 << 9;
        /// The IOMMU's table accesses snoop the CPU caches.
        const COHERENT = 1 << 10;
        /// Isochronous table accesses.
        const ISOC = 1 << 11;
        /// The IOMMU fetches commands from the command buffer.
        const CMD_BUF_EN = 1 << 12;
        /// Peripheral page request log on.
        const PPR_LOG_EN = 1 << 13;
        /// Interrupt on PPR log entries.
        const PPR_INT_EN = 1 << 14;
        /// Peripheral page requests processed.
        const PPR_EN = 1 << 15;
        /// Guest (two-level) translation on.
        const GT_EN = 1 << 16;
        /// Guest virtual APIC (128-bit IRTE format) on.
        const GA_EN = 1 << 17;
    }
}

impl Control {
    /// The bits this driver owns: cleared before the bases are programmed and set (or left
    /// clear) by the driver itself. Everything else (coherency, ordering, invalidation
    /// timeout) is left as firmware set it.
    pub const DRIVER_OWNED: Control = Control::IOMMU_EN
        .union(Control::EVENT_LOG_EN)
        .union(Control::EVENT_INT_EN)
        .union(Control::COM_WAIT_INT_EN)
        .union(Control::CMD_BUF_EN)
        .union(Control::PPR_LOG_EN)
        .union(Control::PPR_INT_EN)
        .union(Control::PPR_EN)
        .union(Control::GT_EN)
        .union(Control::GA_EN);
}

bitflags::bitflags! {
    /// IOMMU Status register bits (offset 0x2020).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Status: u64 {
        /// The event log filled up; logging stopped (write 1 to clear).
        const EVENT_OVERFLOW = 1 << 0;
        /// An event was logged (write 1 to clear).
        const EVENT_LOG_INT = 1 << 1;
        /// A COMPLETION_WAIT with I=1 completed (write 1 to clear).
        const COM_WAIT_INT = 1 << 2;
        /// The event log is running.
        const EVENT_LOG_RUN = 1 << 3;
        /// The command buffer is running.
        const CMD_BUF_RUN = 1 << 4;
        /// The PPR log filled up (write 1 to clear).
        const PPR_OVERFLOW = 1 << 5;
        /// A PPR request was logged (write 1 to clear).
        const PPR_INT = 1 << 6;
    }
}

impl Status {
    /// The write-1-to-clear bits the driver clears at setup.
    pub const W1C: Status = Status::EVENT_OVERFLOW
        .union(Status::EVENT_LOG_INT)
        .union(Status::COM_WAIT_INT)
        .union(Status::PPR_OVERFLOW)
        .union(Status::PPR_INT);
}

/// The Extended Feature Register: what this IOMMU implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Efr(pub u64);

impl Efr {
    fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }
    fn field(self, lo: u32, width: u32) -> u64 {
        crate::bits::field(self.0, lo, width)
    }
    /// PreFSup: PREFETCH_IOMMU_PAGES is implemented.
    pub fn prefetch(self) -> bool {
        self.bit(0)
    }
    /// PPRSup: peripheral page requests.
    pub fn ppr(self) -> bool {
        self.bit(1)
    }
    /// XTSup: x2APIC interrupt remapping.
    pub fn x2apic(self) -> bool {
        self.bit(2)
    }
    /// NXSup: no-execute protection.
    pub fn nx(self) -> bool {
        self.bit(3)
    }
    /// GTSup: guest (two-level) translation.
    pub fn guest_translation(self) -> bool {
        self.bit(4)
    }
    /// IASup: INVALIDATE_IOMMU_ALL is implemented.
    pub fn invalidate_all(self) -> bool {
        self.bit(6)
    }
    /// GASup: guest virtual APIC.
    pub fn guest_apic(self) -> bool {
        self.bit(7)
    }
    /// HESup: hardware error registers.
    pub fn hardware_errors(self) -> bool {
        self.bit(8)
    }
    /// PCSup: performance counters.
    pub fn perf_counters(self) -> bool {
        self.bit(9)
    }
    /// HATS (bits 11:10): host page-table levels supported, 0 = 4, 1 = 5, 2 = 6, 3 reserved.
    pub fn hats(self) -> u8 {
        self.field(10, 2) as u8
    }
    /// GATS (bits 13:12): guest page-table levels, 0 = 4, 1 = 5, 2/3 reserved.
    pub fn gats(self) -> u8 {
        self.field(12, 2) as u8
    }
    /// GLXSup (bits 15:14): guest CR3 table levels supported.
    pub fn glx(self) -> u8 {
        self.field(14, 2) as u8
    }
    /// PASmax (bits 36:32): log2 of the PASID count minus one.
    pub fn pasid_max(self) -> u8 {
        self.field(32, 5) as u8
    }
    /// SmiFSup (bits 17:16) = 01b: SMI filter registers exist; SmiFRC (bits 20:18) says how
    /// many (the field plus one). 0 when the unit has none (every other SmiFSup value).
    pub fn smi_filter_registers(self) -> usize {
        if self.field(16, 2) == 1 {
            self.field(18, 3) as usize + 1
        } else {
            0
        }
    }
    /// The deepest host (v1) page table this IOMMU walks, or `None` if HATS is reserved.
    pub fn max_host_levels(self) -> Option<u32> {
        match self.hats() {
            h @ 0..=2 => Some(4 + u32::from(h)),
            _ => None,
        }
    }

    /// The EFR in words, one feature per item: supported features by name, fields with values.
    pub fn words(self) -> Vec<String> {
        let flags: [(bool, &str); 11] = [
            (self.prefetch(), "PreF (prefetch)"),
            (self.ppr(), "PPR (peripheral page requests)"),
            (self.x2apic(), "XT (x2APIC interrupts)"),
            (self.nx(), "NX (no-execute)"),
            (self.guest_translation(), "GT (guest translation)"),
            (self.invalidate_all(), "IA (INVALIDATE_IOMMU_ALL)"),
            (self.guest_apic(), "GA (guest virtual APIC)"),
            (self.hardware_errors(), "HE (hardware error registers)"),
            (self.perf_counters(), "PC (performance counters)"),
            (self.bit(48), "GIo (guest I/O protection)"),
            (self.bit(52), "HD (host dirty bits)"),
        ];
        let mut out: Vec<String> =
            flags.iter().filter(|(on, _)| *on).map(|(_, name)| String::from(*name)).collect();
        if self.smi_filter_registers() > 0 {
            out.push(format!("SmiF ({} SMI filter registers)", self.smi_filter_registers()));
        }
        match self.max_host_levels() {
            Some(levels) => out.push(format!("HATS={} ({levels}-level host tables)", self.hats())),
            None => out.push(format!("HATS={} (reserved)", self.hats())),
        }
        let gats = match self.gats() {
            0 => "4-level",
            1 => "5-level",
            _ => "reserved",
        };
        out.push(format!("GATS={} ({gats} guest tables)", self.gats()));
        if self.guest_translation() {
            out.push(format!("GLX={}", self.glx()));
            out.push(format!("PASmax={}", self.pasid_max()));
        }
        out
    }
}
