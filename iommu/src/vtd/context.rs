//! Legacy-mode context entries: one 128-bit entry per device function, naming the domain
//! and its second-level page-table root.

use crate::invalidate::DomainId;
use crate::platform::PhysAddr;

use crate::bits::field;

/// Translation type "multi-level second-level page table" (TT = 0).
pub const TT_MULTI_LEVEL: u64 = 0;
/// Translation type "pass-through" (TT = 2; only with ECAP.PT).
pub const TT_PASS_THROUGH: u64 = 2;

/// A legacy context entry (VT-d spec 9.3): `lo` holds P, FPD, TT and the table root,
/// `hi` holds AW and the domain id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContextEntry {
    /// Bits 63:0: P (0), FPD (1), TT (3:2), second-level page-table pointer (63:12).
    pub lo: u64,
    /// Bits 127:64: AW (2:0), DID (23:8).
    pub hi: u64,
}

impl ContextEntry {
    /// A present entry translating through a `levels`-deep (3..=5) table at `root` for
    /// `domain`, with faults recorded (FPD = 0) and TT = 0 (untranslated requests only).
    pub fn translated(domain: DomainId, root: PhysAddr, levels: u32) -> Self {
        let aw = u64::from(levels.saturating_sub(2)) & 0x7;
        ContextEntry {
            lo: (root & !0xFFF) | (TT_MULTI_LEVEL << 2) | 1,
            hi: (u64::from(domain) << 8) | aw,
        }
    }

    /// A present pass-through entry (TT = 2) for `domain`; AW still names a supported
    /// depth, since units check it even when they do not walk tables.
    pub fn pass_through(domain: DomainId, levels: u32) -> Self {
        let aw = u64::from(levels.saturating_sub(2)) & 0x7;
        ContextEntry { lo: (TT_PASS_THROUGH << 2) | 1, hi: (u64::from(domain) << 8) | aw }
    }

    /// Whether the present bit is set.
    pub fn present(&self) -> bool {
        self.lo & 1 != 0
    }
    /// Fault processing disable: when set the unit records no faults for this device.
    pub fn fault_processing_disabled(&self) -> bool {
        self.lo & 2 != 0
    }
    /// The translation type field (0 multi-level, 2 pass-through).
    pub fn translation_type(&self) -> u64 {
        field(self.lo, 2, 2)
    }
    /// Physical address of the second-level page-table root.
    pub fn root(&self) -> PhysAddr {
        self.lo & !0xFFF
    }
    /// The address-width field (levels - 2).
    pub fn address_width(&self) -> u32 {
        field(self.hi, 0, 3) as u32
    }
    /// Second-level table depth named by AW.
    pub fn levels(&self) -> u32 {
        self.address_width() + 2
    }
    /// The domain id the unit tags this device's cached translations with.
    pub fn domain(&self) -> DomainId {
        field(self.hi, 8, 16) as DomainId
    }
}

/// Splits a PCI requester id into (bus, devfn).
pub fn split_rid(rid: u16) -> (u8, u8) {
    ((rid >> 8) as u8, rid as u8)
}
