//! Bring-up discipline for real units: the Control register built from zero, a command
//! buffer whose run bit may lag its enable bit, and a stopped command buffer reset and
//! restarted.
//!
//! Firmware leaves the Control register as it used the unit (device-table segmentation,
//! GA logging, PPR, guest translation, its own invalidation time-out): inherited, any of
//! these changes how the unit reads the tables this driver writes. So enable starts from
//! zero and sets what the driver means: the ordering and isochrony bits the IVHD flags
//! ask for (HtTunEn, PassPW, ResPassPW, Isoc), coherent table walks, and a 1 s
//! invalidation time-out (as Linux's `iommu_init_flags`).

use crate::bits::Field;
use crate::error::HwError;
use crate::platform::{poll_until, FrameAllocator, Mmio, PhysMemory, POLL_LIMIT};

use crate::amdvi::regs::{self, Control, Status};

use super::AmdViUnit;

/// Control bits 7:5, InvTimeOut.
const INV_TIMEOUT: Field = Field::new(5, 3);
/// InvTimeOut encoding of 1 second.
const INV_TIMEOUT_1S: u64 = 4;

/// IVHD flags (IVRS): bit 0 HtTunEn, 1 PassPW, 2 ResPassPW, 3 Isoc.
const IVHD_HT_TUN: Field = Field::bit(0);
const IVHD_PASS_PW: Field = Field::bit(1);
const IVHD_RES_PASS_PW: Field = Field::bit(2);
const IVHD_ISOC: Field = Field::bit(3);

/// The Control value enable starts from (no enable bit set): see the module comment.
pub fn initial_control(ivhd_flags: u8) -> Control {
    let flags = u64::from(ivhd_flags);
    let mut c = Control::COHERENT | Control::from_bits_retain(INV_TIMEOUT.encode(INV_TIMEOUT_1S));
    for (flag, bit) in [
        (IVHD_HT_TUN, Control::HT_TUN_EN),
        (IVHD_PASS_PW, Control::PASS_PW),
        (IVHD_RES_PASS_PW, Control::RES_PASS_PW),
        (IVHD_ISOC, Control::ISOC),
    ] {
        if flag.is_set(flags) {
            c |= bit;
        }
    }
    c
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> AmdViUnit<R, P> {
    /// The IVHD flags (IVRS) of this unit, used by the next [`enable`](Self::enable).
    pub fn set_ivhd_flags(&mut self, flags: u8) {
        self.ivhd_flags = flags;
    }

    /// The IVHD flags enable uses.
    pub fn ivhd_flags(&self) -> u8 {
        self.ivhd_flags
    }

    /// Whether translation is on (enable succeeded and no disable since).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn command_buffer_running(&self) -> bool {
        Status::from_bits_retain(self.regs.read64(regs::STATUS)).contains(Status::CMD_BUF_RUN)
    }

    /// Waits (bounded) for Status.CMD_BUF_RUN to reach `running`: real units set it some
    /// time after CmdBufEn (with IommuEn), so one read right after enabling proves nothing.
    pub(super) fn wait_command_buffer(&self, running: bool) -> Result<(), HwError> {
        if poll_until(POLL_LIMIT, || self.command_buffer_running() == running) {
            Ok(())
        } else if running {
            Err(HwError::Timeout { what: "Status.CMD_BUF_RUN set (command buffer started)" })
        } else {
            Err(HwError::Timeout { what: "Status.CMD_BUF_RUN clear (command buffer stopped)" })
        }
    }

    /// Resets and restarts a command buffer the unit stopped (an illegal command or a
    /// fetch error): CmdBufEn off, the run bit seen clear, head and tail back to 0, CmdBufEn
    /// on, the run bit seen set. Whatever was queued is gone: the caller's operation failed
    /// and must be reported, but the unit takes commands again.
    pub fn restart_command_buffer(&mut self) -> Result<(), HwError> {
        let control = Control::from_bits_retain(self.regs.read64(regs::CONTROL));
        self.regs.write64(regs::CONTROL, control.difference(Control::CMD_BUF_EN).bits());
        self.wait_command_buffer(false)?;
        self.regs.write64(regs::COMMAND_HEAD, 0);
        self.regs.write64(regs::COMMAND_TAIL, 0);
        self.commands.reset();
        self.regs.write64(regs::CONTROL, (control | Control::CMD_BUF_EN).bits());
        self.wait_command_buffer(true)?;
        self.stats.command_buffer_restarts += 1;
        Ok(())
    }
}
