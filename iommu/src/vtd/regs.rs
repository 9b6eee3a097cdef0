//! VT-d register offsets, bit fields, and the CAP/ECAP decode.
//!
//! Offsets and layouts follow the VT-d specification, chapter 11 ("Register Descriptions").
//! Registers marked 32-bit must only ever be written with 32-bit accesses: QEMU aborts on a
//! 64-bit write to them (see the crate notes on QEMU's emulated unit).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::bits::field;

/// Version register (32-bit): major 7:4, minor 3:0.
pub const VER: usize = 0x00;
/// Capability register (64-bit, read-only).
pub const CAP: usize = 0x08;
/// Extended capability register (64-bit, read-only).
pub const ECAP: usize = 0x10;
/// Global command register (32-bit, write-only).
pub const GCMD: usize = 0x18;
/// Global status register (32-bit, read-only).
pub const GSTS: usize = 0x1C;
/// Root table address register (64-bit).
pub const RTADDR: usize = 0x20;
/// Context command register (64-bit).
pub const CCMD: usize = 0x28;
/// Fault status register (32-bit).
pub const FSTS: usize = 0x34;
/// Fault event control register (32-bit).
pub const FECTL: usize = 0x38;
/// Fault event data register (32-bit).
pub const FEDATA: usize = 0x3C;
/// Fault event address register (32-bit).
pub const FEADDR: usize = 0x40;
/// Fault event upper address register (32-bit).
pub const FEUADDR: usize = 0x44;
/// Invalidation queue head (64-bit, read-only): byte offset of the next descriptor read.
pub const IQH: usize = 0x80;
/// Invalidation queue tail (64-bit): byte offset one past the last descriptor written.
pub const IQT: usize = 0x88;
/// Invalidation queue address (64-bit): base, descriptor width and queue size.
pub const IQA: usize = 0x90;
/// Invalidation completion status (32-bit).
pub const ICS: usize = 0x9C;
/// Interrupt remapping table address (64-bit): base, EIME and the table size.
pub const IRTA: usize = 0xB8;

/// GCMD/GSTS: translation enable / status.
pub const GCMD_TE: u32 = 1 << 31;
/// GCMD: set root table pointer (one-shot). GSTS bit 30 is RTPS, the same position.
pub const GCMD_SRTP: u32 = 1 << 30;
/// GCMD: set fault log (one-shot).
pub const GCMD_SFL: u32 = 1 << 29;
/// GCMD: write buffer flush (one-shot). GSTS bit 27 is WBFS, busy while the flush runs.
pub const GCMD_WBF: u32 = 1 << 27;
/// GCMD/GSTS: queued invalidation enable / status.
pub const GCMD_QIE: u32 = 1 << 26;
/// GCMD/GSTS: interrupt remapping enable / status.
pub const GCMD_IRE: u32 = 1 << 25;
/// GCMD: set interrupt remapping table pointer (one-shot). GSTS bit 24 is IRTPS.
pub const GCMD_SIRTP: u32 = 1 << 24;
/// GCMD/GSTS: compatibility-format interrupts allowed (CFI) / status (CFIS). This driver
/// never sets it: with it clear, an interrupt request in compatibility format is blocked.
pub const GCMD_CFI: u32 = 1 << 23;
/// GSTS: interrupt remapping enabled.
pub const GSTS_IRES: u32 = 1 << 25;
/// GSTS: interrupt remapping table pointer latched.
pub const GSTS_IRTPS: u32 = 1 << 24;
/// GSTS: compatibility-format interrupts pass (firmware or a previous kernel set CFI).
pub const GSTS_CFIS: u32 = 1 << 23;
/// GSTS: translation enabled.
pub const GSTS_TES: u32 = 1 << 31;
/// GSTS: root table pointer latched.
pub const GSTS_RTPS: u32 = 1 << 30;
/// GSTS: write buffer flush still in progress.
pub const GSTS_WBFS: u32 = 1 << 27;
/// GSTS: queued invalidation enabled.
pub const GSTS_QIES: u32 = 1 << 26;
/// GSTS bits that are safe to echo back into GCMD: every status bit except those sitting
/// where GCMD has a one-shot command (SRTP 30, SFL 29, WBF 27, SIRTP 24). Building GCMD as
/// `GSTS | bit` without this mask re-issues SRTP and silently flushes every cache.
pub const GSTS_PERSISTENT_MASK: u32 = 0x96FF_FFFF;

/// CCMD: invalidate context cache (set to start, hardware clears when done).
pub const CCMD_ICC: u64 = 1 << 63;
/// IOTLB register: invalidate IOTLB (set to start, hardware clears when done).
pub const IOTLB_IVT: u64 = 1 << 63;

/// FSTS: primary fault overflow (write 1 to clear).
pub const FSTS_PFO: u32 = 1 << 0;
/// FSTS: primary pending fault (some fault record has F set).
pub const FSTS_PPF: u32 = 1 << 1;
/// FSTS: invalidation queue error (write 1 to clear).
pub const FSTS_IQE: u32 = 1 << 4;
/// FSTS: invalidation completion error (write 1 to clear).
pub const FSTS_ICE: u32 = 1 << 5;
/// FSTS: invalidation time-out error (write 1 to clear).
pub const FSTS_ITE: u32 = 1 << 6;
/// FECTL: interrupt mask (set at reset).
pub const FECTL_IM: u32 = 1 << 31;
/// Protected Memory Enable register (32-bit).
pub const PMEN: usize = 0x64;
/// PMEN: enable protected memory regions (EPM).
pub const PMEN_EPM: u32 = 1 << 31;
/// PMEN: protected region status (PRS), set while the regions are in force.
pub const PMEN_PRS: u32 = 1 << 0;

/// The capability register, decoded on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap(pub u64);

impl Cap {
    /// Number of domain ids the unit supports (CAP.ND: 2^(4 + 2*ND)).
    pub fn domain_count(self) -> u32 {
        let nd = field(self.0, 0, 3) as u32;
        1u32 << (4 + 2 * nd.min(6))
    }
    /// CAP.RWBF: the unit needs explicit write-buffer flushes after table updates.
    pub fn rwbf(self) -> bool {
        field(self.0, 4, 1) != 0
    }
    /// CAP.PLMR: the unit has a protected low-memory region (PMEN applies).
    pub fn plmr(self) -> bool {
        field(self.0, 5, 1) != 0
    }
    /// CAP.PHMR: the unit has a protected high-memory region (PMEN applies).
    pub fn phmr(self) -> bool {
        field(self.0, 6, 1) != 0
    }
    /// CAP.CM: the unit may cache not-present entries, so software invalidates after map too.
    pub fn caching_mode(self) -> bool {
        field(self.0, 7, 1) != 0
    }
    /// CAP.SAGAW: bit 1 = 3-level (39-bit), bit 2 = 4-level (48-bit), bit 3 = 5-level.
    pub fn sagaw(self) -> u32 {
        field(self.0, 8, 5) as u32
    }
    /// Whether the second-level table depth `levels` (3..=5) is supported.
    pub fn supports_levels(self, levels: u32) -> bool {
        (3..=5).contains(&levels) && self.sagaw() & (1 << (levels - 2)) != 0
    }
    /// Maximum guest address width in bits (CAP.MGAW + 1).
    pub fn mgaw_bits(self) -> u32 {
        field(self.0, 16, 6) as u32 + 1
    }
    /// Byte offset of the first fault recording register (CAP.FRO * 16).
    pub fn fault_record_offset(self) -> usize {
        field(self.0, 24, 10) as usize * 16
    }
    /// CAP.SLLPS: bit 0 = 2 MiB, bit 1 = 1 GiB second-level pages.
    pub fn sllps(self) -> u32 {
        field(self.0, 34, 4) as u32
    }
    /// CAP.PSI: page-selective IOTLB invalidation is supported.
    pub fn page_selective(self) -> bool {
        field(self.0, 39, 1) != 0
    }
    /// Number of fault recording registers (CAP.NFR + 1).
    pub fn fault_record_count(self) -> usize {
        field(self.0, 40, 8) as usize + 1
    }
    /// CAP.MAMV: the largest address mask a page-selective invalidation accepts.
    pub fn max_address_mask(self) -> u32 {
        field(self.0, 48, 6) as u32
    }
    /// CAP.DWD: the unit can drain writes on IOTLB invalidation.
    pub fn write_drain(self) -> bool {
        field(self.0, 54, 1) != 0
    }
    /// CAP.DRD: the unit can drain reads on IOTLB invalidation.
    pub fn read_drain(self) -> bool {
        field(self.0, 55, 1) != 0
    }
    /// CAP.PI: posted interrupts supported.
    pub fn posted_interrupts(self) -> bool {
        field(self.0, 59, 1) != 0
    }
}

/// The extended capability register, decoded on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecap(pub u64);

impl Ecap {
    /// ECAP.C: table walks snoop CPU caches; when clear, table writes must be flushed.
    pub fn coherent(self) -> bool {
        field(self.0, 0, 1) != 0
    }
    /// ECAP.QI: queued invalidation supported.
    pub fn queued_invalidation(self) -> bool {
        field(self.0, 1, 1) != 0
    }
    /// ECAP.DT: device-TLB (ATS) supported.
    pub fn device_tlb(self) -> bool {
        field(self.0, 2, 1) != 0
    }
    /// ECAP.IR: interrupt remapping supported.
    pub fn interrupt_remapping(self) -> bool {
        field(self.0, 3, 1) != 0
    }
    /// ECAP.EIM: extended (x2APIC, 32-bit destination) interrupt mode supported.
    pub fn extended_interrupt_mode(self) -> bool {
        field(self.0, 4, 1) != 0
    }
    /// ECAP.PT: pass-through translation type supported.
    pub fn pass_through(self) -> bool {
        field(self.0, 6, 1) != 0
    }
    /// ECAP.SC: snoop control supported.
    pub fn snoop_control(self) -> bool {
        field(self.0, 7, 1) != 0
    }
    /// Byte offset of the IOTLB registers: IVA at this offset, IOTLB at +8 (ECAP.IRO * 16).
    pub fn iotlb_register_offset(self) -> usize {
        field(self.0, 8, 10) as usize * 16
    }
    /// ECAP.MHMV: maximum handle mask value for interrupt-entry-cache invalidation.
    pub fn max_handle_mask(self) -> u32 {
        field(self.0, 20, 4) as u32
    }
    /// ECAP.NEST: nested translation supported.
    pub fn nested(self) -> bool {
        field(self.0, 26, 1) != 0
    }
    /// ECAP.PASID: process address space ids supported.
    pub fn pasid(self) -> bool {
        field(self.0, 40, 1) != 0
    }
    /// ECAP.SMTS: scalable-mode translation supported.
    pub fn scalable_mode(self) -> bool {
        field(self.0, 43, 1) != 0
    }
}

fn yes_no(flag: bool) -> &'static str {
    if flag {
        "yes"
    } else {
        "no"
    }
}

/// The unit's version and capabilities in words, one fact per line, for the boot log.
pub fn describe(ver: u32, cap: Cap, ecap: Ecap) -> Vec<String> {
    let mut lines = Vec::new();
    lines.push(format!(
        "VT-d version {}.{}, CAP {:#018x}, ECAP {:#018x}",
        (ver >> 4) & 0xF,
        ver & 0xF,
        cap.0,
        ecap.0
    ));
    let mut levels = String::new();
    for l in 3..=5 {
        if cap.supports_levels(l) {
            if !levels.is_empty() {
                levels.push_str(", ");
            }
            levels.push_str(&format!("{}-level ({}-bit)", l, 30 + 9 * (l - 2)));
        }
    }
    if levels.is_empty() {
        levels.push_str("none");
    }
    lines.push(format!(
        "address widths (SAGAW): {levels}; max guest address width (MGAW) {} bits",
        cap.mgaw_bits()
    ));
    let mut sizes = String::from("4K");
    if cap.sllps() & 1 != 0 {
        sizes.push_str(", 2M");
    }
    if cap.sllps() & 2 != 0 {
        sizes.push_str(", 1G");
    }
    lines.push(format!("second-level page sizes (SLLPS): {sizes}"));
    lines.push(format!(
        "domains (ND): {} ids; caching mode (CM): {}; write-buffer flush required (RWBF): {}",
        cap.domain_count(),
        yes_no(cap.caching_mode()),
        yes_no(cap.rwbf())
    ));
    lines.push(format!(
        "page-selective invalidation (PSI): {}, max address mask (MAMV) {} (up to {} pages); drain reads/writes: {}/{}",
        yes_no(cap.page_selective()),
        cap.max_address_mask(),
        1u64 << cap.max_address_mask(),
        yes_no(cap.read_drain()),
        yes_no(cap.write_drain())
    ));
    lines.push(format!(
        "fault records (NFR): {} at offset {:#x} (FRO)",
        cap.fault_record_count(),
        cap.fault_record_offset()
    ));
    lines.push(format!(
        "queued invalidation (QI): {}; IOTLB registers at {:#x} (IRO); coherent table walks (C): {}",
        yes_no(ecap.queued_invalidation()),
        ecap.iotlb_register_offset(),
        yes_no(ecap.coherent())
    ));
    lines.push(format!(
        "pass-through (PT): {}; interrupt remapping (IR): {}, x2APIC mode (EIM): {}; snoop control (SC): {}; device TLB (DT): {}",
        yes_no(ecap.pass_through()),
        yes_no(ecap.interrupt_remapping()),
        yes_no(ecap.extended_interrupt_mode()),
        yes_no(ecap.snoop_control()),
        yes_no(ecap.device_tlb())
    ));
    lines.push(format!(
        "nested: {}; PASID: {}; scalable mode: {}; posted interrupts: {}",
        yes_no(ecap.nested()),
        yes_no(ecap.pasid()),
        yes_no(ecap.scalable_mode()),
        yes_no(cap.posted_interrupts())
    ));
    lines
}
