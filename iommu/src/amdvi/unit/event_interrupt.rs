//! The unit's own interrupt: AMD-Vi signals "events were logged" (Control.EventIntEn,
//! Status.EventLogInt) and "a COMPLETION_WAIT with I=1 completed" (Control.ComWaitIntEn,
//! Status.ComWaitInt) through the MSI capability of the IOMMU's PCI function, which the
//! kernel programs. The handler only notes the interrupt; the event log is drained in
//! thread context ([`AmdViUnit::drain_events`], which also clears EventLogInt).

use crate::error::HwError;
use crate::platform::{FrameAllocator, Mmio, PhysMemory};

use crate::amdvi::command::Command;
use crate::amdvi::regs::{self, Control, Status};

use super::AmdViUnit;

impl<R: Mmio, P: FrameAllocator + PhysMemory> AmdViUnit<R, P> {
    /// Whether logged events raise the unit's interrupt (Control.EventIntEn); takes effect
    /// at once on a running unit and is kept by the next [`enable`](Self::enable). Set it
    /// only once the IOMMU function's MSI points at a handler.
    pub fn set_event_interrupt(&mut self, on: bool) {
        self.event_interrupt = on;
        if self.enabled {
            let control = Control::from_bits_retain(self.regs.read64(regs::CONTROL));
            let control = if on {
                control | Control::EVENT_INT_EN
            } else {
                control.difference(Control::EVENT_INT_EN)
            };
            self.regs.write64(regs::CONTROL, control.bits());
        }
    }

    /// Whether logged events raise the unit's interrupt.
    pub fn event_interrupt(&self) -> bool {
        self.event_interrupt
    }

    /// Raises the unit's interrupt once on purpose, through the same MSI the event log
    /// uses: ComWaitIntEn on, a COMPLETION_WAIT with I=1 (and its store, polled), the
    /// status bit cleared, ComWaitIntEn off again. Proves the interrupt path on an
    /// emulator that never logs an event.
    pub fn raise_completion_interrupt(&mut self) -> Result<(), HwError> {
        let control = Control::from_bits_retain(self.regs.read64(regs::CONTROL));
        self.regs.write64(regs::CONTROL, (control | Control::COM_WAIT_INT_EN).bits());
        let waited = self.completion_wait_with(Command::completion_wait_interrupt);
        self.regs.write64(regs::STATUS, Status::COM_WAIT_INT.bits());
        self.regs.write64(regs::CONTROL, control.difference(Control::COM_WAIT_INT_EN).bits());
        waited
    }
}
