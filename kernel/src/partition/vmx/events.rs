//! Events into and out of a VMX guest: injection through the VM-entry
//! interruption-information field, the re-delivery of an event whose delivery an exit
//! interrupted (IDT-vectoring information, `vcpu::redelivery`), and the pending virtual
//! interrupt with interrupt-window exiting.

use super::super::vcpu::{self, Event, EventKind};
use super::caps::PROC_INTERRUPT_WINDOW;
use super::vmcs::{self, event};
use super::VmxVcpu;

impl VmxVcpu {
    /// Queues `e` for the next VM entry (VM-entry interruption information and error
    /// code). Software-raised events are never injected (see `vcpu::redelivery`).
    pub(super) fn inject(&mut self, e: Event) {
        let ty = match e.kind {
            EventKind::Interrupt => event::TYPE_EXTERNAL,
            EventKind::Nmi => event::TYPE_NMI,
            EventKind::Exception => event::TYPE_HW_EXCEPTION,
            EventKind::SoftwareInterrupt => event::TYPE_SOFT_INT,
            EventKind::SoftwareException => event::TYPE_SOFT_EXCEPTION,
            EventKind::PrivilegedSoftwareException => event::TYPE_PRIV_SOFT_EXCEPTION,
        };
        let info = event::VALID.with(event::TYPE.set(u64::from(e.vector), ty), true);
        let info = event::ERROR_VALID.with(info, e.error_code.is_some());
        self.w(vmcs::ENTRY_EXCEPTION_ERROR_CODE, u64::from(e.error_code.unwrap_or(0)));
        self.w(vmcs::ENTRY_INTERRUPTION_INFO, info);
    }

    /// After an exit: when it interrupted an event's delivery (IDT-vectoring information
    /// valid), the event is queued for the next entry as `vcpu::redelivery` decides, so
    /// the guest receives it once (a VM exit clears the entry's own valid bit, so nothing
    /// else is queued yet; the pending virtual interrupt waits behind it).
    pub(super) fn complete_event(&mut self) {
        let info = self.r(vmcs::IDT_VECTORING_INFO);
        if !event::VALID.is_set(info) {
            return;
        }
        let kind = match event::TYPE.get(info) {
            event::TYPE_EXTERNAL => EventKind::Interrupt,
            event::TYPE_NMI => EventKind::Nmi,
            event::TYPE_HW_EXCEPTION => EventKind::Exception,
            event::TYPE_SOFT_INT => EventKind::SoftwareInterrupt,
            event::TYPE_SOFT_EXCEPTION => EventKind::SoftwareException,
            event::TYPE_PRIV_SOFT_EXCEPTION => EventKind::PrivilegedSoftwareException,
            _ => return,
        };
        let error_code =
            event::ERROR_VALID.is_set(info).then(|| self.r(vmcs::IDT_VECTORING_ERROR_CODE) as u32);
        let e = Event { kind, vector: event::VECTOR.get(info) as u8, error_code };
        if let Some(e) = vcpu::redelivery(e) {
            log::debug!("vmx: re-injecting {e:?}, whose delivery the exit interrupted");
            self.inject(e);
        }
    }

    /// Injects the pending virtual interrupt when the guest can take it now, else asks
    /// for an exit when it can (interrupt-window exiting).
    pub(super) fn deliver_pending(&mut self) {
        let Some(vector) = self.pending else { return };
        // An event already queued for this entry (an exception the run loop injected)
        // goes first; the interrupt waits for the window after it.
        let queued = event::VALID.is_set(self.r(vmcs::ENTRY_INTERRUPTION_INFO));
        let rflags_if = self.r(vmcs::GUEST_RFLAGS) & (1 << 9) != 0;
        let blocked = vmcs::INTERRUPT_SHADOW.get(self.r(vmcs::GUEST_INTERRUPTIBILITY)) != 0;
        if rflags_if && !blocked && !queued {
            let e = Event { kind: EventKind::Interrupt, vector, error_code: None };
            self.inject(e);
            self.pending = None;
        } else {
            let p = self.r(vmcs::PRIMARY_CONTROLS);
            self.w(vmcs::PRIMARY_CONTROLS, p | u64::from(PROC_INTERRUPT_WINDOW));
        }
    }
}
