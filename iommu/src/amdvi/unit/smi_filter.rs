//! The SMI filter: on units whose EFR says they have SMI filter registers (SmiFSup = 01b),
//! only a device named by a valid register (SmiDV = 1) may send a system-management
//! interrupt; everything else is dropped. A register left unlocked can be rewritten by
//! whoever reaches the unit's registers next, so enable locks every one (SmiFLock = 1):
//! an unused register stays invalid for good (no device can be added), and a register
//! firmware filled with a device id keeps that id (the platform's own SMI source, such as
//! the southbridge, keeps working) and is locked as it is. A register firmware already
//! locked is left alone and reported. Device SMIs are also refused by every device table
//! entry this driver writes (SysMgt = 00b); the filter is the second, unit-wide wall.

use crate::bits::Field;
use crate::platform::{FrameAllocator, Mmio, PhysMemory};

use crate::amdvi::regs;

use super::AmdViUnit;

/// SmiDID: the device id the register names.
const SMI_DEVICE: Field = Field::new(0, 16);
/// SmiDV: the device id is valid (that device may send SMIs).
const SMI_VALID: Field = Field::bit(16);
/// SmiFLock: the register is read-only until reset.
const SMI_LOCK: Field = Field::bit(17);
/// Register slots the MMIO map has room for (0x60..0xE0); SmiFRC names at most 8.
const MAX_SMI_FILTERS: usize = 16;

/// What enable found and did to the SMI filter registers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmiFilterLock {
    /// Registers the EFR announces (0: the unit has no SMI filter).
    pub registers: usize,
    /// Registers this driver locked (unused ones as invalid, used ones with their id).
    pub locked_now: usize,
    /// Registers firmware had already locked (left as they were).
    pub firmware_locked: usize,
    /// Device ids allowed to send SMIs after the lock (firmware's valid entries).
    pub allowed: alloc::vec::Vec<u16>,
    /// Registers that did not read back locked after the write (the unit ignored it).
    pub failed: usize,
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> AmdViUnit<R, P> {
    /// Locks every SMI filter register the EFR announces (see the module comment).
    pub(super) fn lock_smi_filters(&mut self) -> SmiFilterLock {
        let registers = self.efr.smi_filter_registers().min(MAX_SMI_FILTERS);
        let mut report = SmiFilterLock { registers, ..SmiFilterLock::default() };
        for n in 0..registers {
            let at = regs::SMI_FILTER_BASE + 8 * n;
            let old = self.regs.read64(at);
            let valid = SMI_VALID.is_set(old);
            if SMI_LOCK.is_set(old) {
                report.firmware_locked += 1;
            } else {
                // Keep firmware's device id only where it is valid; else name nothing.
                let keep = if valid { SMI_DEVICE.encode(SMI_DEVICE.get(old)) } else { 0 };
                let value = keep | SMI_VALID.encode(u64::from(valid)) | SMI_LOCK.encode(1);
                self.regs.write64(at, value);
                if SMI_LOCK.is_set(self.regs.read64(at)) {
                    report.locked_now += 1;
                } else {
                    report.failed += 1;
                }
            }
            let now = self.regs.read64(at);
            if SMI_VALID.is_set(now) {
                report.allowed.push(SMI_DEVICE.get(now) as u16);
            }
        }
        report
    }

    /// What enable did to the SMI filter registers.
    pub fn smi_filters(&self) -> &SmiFilterLock {
        &self.smi_filters
    }
}
