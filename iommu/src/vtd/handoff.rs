//! Taking a unit over from firmware without ever leaving DMA unrestricted (fail closed).
//!
//! Firmware may leave a unit translating (its own tables, e.g. pre-boot DMA protection),
//! with its invalidation queue running, with error bits set in FSTS from its own use, and
//! with protected memory regions (PMRs) enabled. The hand-off:
//! 1. clears the stale queue errors (FSTS IQE, ITE, ICE) and the fault overflow (PFO): a
//!    set IQE stops the queue, and stale bits would be blamed on this driver;
//! 2. replaces the descriptor a halted queue stopped at, drains a running firmware queue
//!    with a bound, then turns QIE off whatever happened
//!    (a timeout is reported in [`HandOff`], not fatal: the descriptors belong to firmware
//!    and the caches are invalidated globally anyway), and clears the errors again;
//! 3. never turns translation off: the new root table (every context entry not present,
//!    so every DMA blocked) is latched with SRTP while translation stays on, and the
//!    caches are invalidated globally before the first device is attached;
//! 4. disables the PMRs only once translation is on (CAP.PLMR / CAP.PHMR), so memory is
//!    protected by one or the other at every moment.

use crate::error::HwError;
use crate::platform::{FrameAllocator, Mmio, PhysAddr, PhysMemory};

use super::invalidation::{poll, ContextInvalidation, Descriptor};
use super::regs;
use super::VtdUnit;

/// What the hand-off found and did (for the boot log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandOff {
    /// Firmware had translation on; it stayed on (new root latched under it).
    pub translation_was_on: bool,
    /// Firmware's invalidation queue was running and was turned off.
    pub firmware_queue_stopped: bool,
    /// That queue did not drain within the bound (its descriptors were dropped).
    pub firmware_queue_timed_out: bool,
    /// FSTS error bits (IQE, ITE, ICE, PFO) found set and cleared.
    pub stale_errors: u32,
    /// Firmware's queue had halted on an invalid descriptor (IQE), which was replaced.
    pub bad_descriptor_replaced: bool,
    /// Protected memory regions were enabled and are now disabled.
    pub pmr_disabled: bool,
}

/// Chipset errata the boot found for this unit (see [`super::quirks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quirks {
    /// Flush the write buffer although CAP.RWBF reads 0.
    pub write_buffer_flush: bool,
}

/// IQH bits 18:4: the offset of the descriptor at the head (128-bit descriptors).
const IQH_OFFSET: u64 = 0x7_FFF0;
/// What the fence's wait descriptor writes.
const FENCE_DATA: u32 = 0x600D;

/// The FSTS bits a previous owner may leave set (write-1-to-clear).
const STALE_ERRORS: u32 = regs::FSTS_IQE | regs::FSTS_ITE | regs::FSTS_ICE | regs::FSTS_PFO;

impl<R: Mmio, P: FrameAllocator + PhysMemory> VtdUnit<R, P> {
    /// Clears stale FSTS error bits; returns those that were set.
    fn clear_stale_errors(&mut self) -> u32 {
        let set = self.mmio.read32(regs::FSTS) & STALE_ERRORS;
        if set != 0 {
            self.mmio.write32(regs::FSTS, set);
        }
        set
    }

    /// Steps 1 and 2: errors cleared, a firmware queue drained (bounded) and stopped.
    pub(super) fn take_over_queue(&mut self, report: &mut HandOff) -> Result<(), HwError> {
        let queue_on = self.mmio.read32(regs::GSTS) & regs::GSTS_QIES != 0;
        if queue_on && self.mmio.read32(regs::FSTS) & regs::FSTS_IQE != 0 {
            self.skip_bad_descriptor();
            report.bad_descriptor_replaced = true;
        }
        report.stale_errors |= self.clear_stale_errors();
        if queue_on {
            // Clearing IQE lets the queue fetch again; writing the tail it already has
            // tells units that only look at the queue on a tail write (QEMU).
            let tail = self.mmio.read64(regs::IQT);
            self.mmio.write64(regs::IQT, tail);
            report.firmware_queue_stopped = true;
            let drained = poll(
                || self.mmio.read64(regs::IQH) == self.mmio.read64(regs::IQT),
                "IQH == IQT (firmware's queued invalidations drained)",
            )
            .and_then(|()| self.fence_firmware_queue());
            report.firmware_queue_timed_out = drained.is_err();
            self.set_persistent(regs::GCMD_QIE, false);
            self.wait_status(
                regs::GSTS_QIES,
                false,
                "GSTS.QIES clear (firmware left the queue on)",
            )?;
            report.stale_errors |= self.clear_stale_errors();
        }
        self.queue_on = false;
        Ok(())
    }

    /// A queue halted by IQE stops at the bad descriptor (IQH points at it), and some
    /// units (QEMU) refuse to turn the queue off while IQH != IQT: the bad descriptor is
    /// overwritten with a global context-cache invalidation (harmless: every cache is
    /// invalidated globally before use anyway), as Linux does with its own queue, so the
    /// queue can run on and drain.
    fn skip_bad_descriptor(&mut self) {
        let base = self.mmio.read64(regs::IQA) & !0xFFF;
        let head = self.mmio.read64(regs::IQH) & IQH_OFFSET;
        self.put_descriptor(base + head, Descriptor::context(ContextInvalidation::Global));
    }

    fn put_descriptor(&mut self, at: PhysAddr, d: Descriptor) {
        self.mem.write_u64(at, d.lo);
        self.mem.write_u64(at + 8, d.hi);
        self.mem.flush_for_device(at, 16);
    }

    /// Appends a wait descriptor with a status write to firmware's drained queue and waits
    /// for it (bounded): the specification's way to know the queue is done before QIE is
    /// cleared, and what some units (QEMU) insist on seeing last before they let QIE go.
    fn fence_firmware_queue(&mut self) -> Result<(), HwError> {
        let status = self.mem.alloc_zeroed_frame().ok_or(HwError::OutOfMemory)?;
        let iqa = self.mmio.read64(regs::IQA);
        let (base, size) = (iqa & !0xFFF, 4096u64 << (iqa & 0x7));
        let tail = self.mmio.read64(regs::IQT) & IQH_OFFSET;
        self.put_descriptor(base + tail, Descriptor::wait(status, FENCE_DATA));
        self.mmio.write64(regs::IQT, (tail + 16) % size);
        let mem = &self.mem;
        let done = poll(
            || mem.read_u64(status) as u32 == FENCE_DATA,
            "firmware queue wait descriptor status write",
        );
        self.mem.free_frame(status);
        done
    }

    /// Step 4: PMRs off (translation is on by now); bounded wait for PRS to clear.
    pub(super) fn disable_protected_regions(
        &mut self,
        report: &mut HandOff,
    ) -> Result<(), HwError> {
        if !(self.cap.plmr() || self.cap.phmr()) {
            return Ok(());
        }
        if self.mmio.read32(regs::PMEN) & regs::PMEN_EPM == 0 {
            return Ok(());
        }
        self.mmio.write32(regs::PMEN, 0);
        poll(
            || self.mmio.read32(regs::PMEN) & regs::PMEN_PRS == 0,
            "PMEN.PRS clear (protected memory regions off)",
        )?;
        report.pmr_disabled = true;
        Ok(())
    }

    /// Applies chipset errata (before [`enable`](Self::enable)).
    pub fn set_quirks(&mut self, quirks: Quirks) {
        self.handoff_quirks = quirks;
    }

    /// The chipset errata applied.
    pub fn quirks(&self) -> Quirks {
        self.handoff_quirks
    }

    /// What the last [`enable`](Self::enable) found of firmware's state.
    pub fn hand_off(&self) -> HandOff {
        self.handoff
    }
}
