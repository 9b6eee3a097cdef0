//! Interrupt remapping: the IRTA/SIRTP/IRE sequence, the hand-off from firmware, IRTEs
//! with source-id verification, interrupt-entry-cache invalidation, and IR fault records.

use super::model::{Event, Inv, QEMU_CAP, QEMU_ECAP};
use super::{bench, qemu_enabled};
use crate::error::HwError;
use crate::platform::FrameAllocator;
use crate::vtd::{remappable_msi, FaultRecord, InvalidationMode, IrState, Irte};

const IRES: u32 = 1 << 25;
const CFIS: u32 = 1 << 23;

#[test]
fn enable_points_the_unit_at_an_empty_table_and_blocks_compatibility_format() {
    let b = qemu_enabled();
    assert_eq!(b.unit.interrupt_remapping(), IrState::Enabled { x2apic: false });
    let hw = b.hw.0.borrow();
    let base = b.unit.irt_address().unwrap();
    // 256 entries (S = 7), xAPIC destinations (EIME = 0).
    assert_eq!(hw.irta, base | 7);
    assert_eq!(hw.gsts & (IRES | CFIS), IRES, "remapping on, compatibility format blocked");
    assert!(!hw.events.contains(&Event::CompatibilityFormat(true)));
    // SIRTP, then a global interrupt-entry-cache invalidation completed, then IRE.
    let at = |e: &Event| hw.events.iter().position(|x| x == e).unwrap();
    let sirtp = at(&Event::SetInterruptTable(base | 7));
    let iec = at(&Event::Queued(Inv::InterruptEntries(None)));
    let ire = at(&Event::InterruptRemapping(true));
    assert!(sirtp < iec && iec < ire);
    assert!(matches!(hw.events[iec + 1], Event::Queued(Inv::Wait { .. })));
    for i in 0..256 {
        assert!(!b.unit.irte(i).unwrap().present(), "entry {i} present in the empty table");
    }
}

#[test]
fn interrupt_remapping_left_on_by_firmware_is_taken_down_before_the_queue() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    let queue = b.mem.clone().alloc_zeroed_frame().unwrap();
    {
        let mut hw = b.hw.0.borrow_mut();
        hw.gsts |= IRES | CFIS | (1 << 26); // IR, CFI and the queue left on
        hw.set_queue_base(queue);
    }
    b.unit.enable().unwrap();
    let handoff = b.unit.ir_handoff();
    assert!(handoff.was_enabled && handoff.compatibility_format_was_allowed);
    let hw = b.hw.0.borrow();
    let at = |e: &Event| hw.events.iter().position(|x| x == e).unwrap();
    let ir_off = at(&Event::InterruptRemapping(false));
    let cfi_off = at(&Event::CompatibilityFormat(false));
    let queue_off = at(&Event::Queue(false));
    assert!(ir_off < cfi_off && cfi_off < queue_off, "{:?}", hw.events);
    assert_eq!(hw.gsts & (IRES | CFIS), IRES);
}

#[test]
fn a_unit_whose_ires_never_clears_times_out_instead_of_hanging() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    {
        let mut hw = b.hw.0.borrow_mut();
        hw.gsts |= IRES;
        hw.stuck.gsts = IRES;
    }
    let what = "GSTS.IRES clear (firmware left interrupt remapping on)";
    assert_eq!(b.unit.enable(), Err(HwError::Timeout { what }));
}

#[test]
fn an_entry_answers_only_its_requester_id_and_each_change_is_invalidated() {
    let mut b = qemu_enabled();
    let before = b.hw.0.borrow().invalidations().len();
    let entry = Irte::remapped(0x41, 3, false, 0x0020).unwrap();
    b.unit.set_irte(5, entry).unwrap();
    let written = b.unit.irte(5).unwrap();
    assert!(written.present() && written.verifies_source());
    assert_eq!((written.vector(), written.source_id()), (0x41, 0x0020));
    // Fixed, physical, edge; xAPIC id 3 in DST bits 15:8; SVT = 1, SQ = 0, SID.
    assert_eq!(written.lo, 1 | (0x41 << 16) | (3 << 40));
    assert_eq!(written.hi, (1 << 18) | 0x20);
    {
        let hw = b.hw.0.borrow();
        let new = &hw.invalidations()[before..];
        assert!(matches!(new, [Inv::InterruptEntries(Some((5, 0))), Inv::Wait { .. }]), "{new:?}");
    }
    // Replacing a present entry: cleared and invalidated, then written and invalidated.
    let before = b.hw.0.borrow().invalidations().len();
    b.unit.set_irte(5, Irte::remapped(0x42, 3, false, 0x0020).unwrap()).unwrap();
    let hw = b.hw.0.borrow();
    let iecs = hw.invalidations()[before..]
        .iter()
        .filter(|i| **i == Inv::InterruptEntries(Some((5, 0))))
        .count();
    assert_eq!(iecs, 2);
    assert!(Irte::remapped(1, 256, false, 0).is_err(), "xAPIC ids are 8 bits");
}

#[test]
fn register_based_invalidation_leaves_interrupt_remapping_off_and_says_why() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    b.unit.set_invalidation_mode(InvalidationMode::Register).unwrap();
    b.unit.enable().unwrap();
    let IrState::Unavailable(why) = b.unit.interrupt_remapping() else {
        panic!("remapping claimed without an interrupt-entry-cache invalidation");
    };
    assert!(why.contains("interrupt entry cache"), "{why}");
    assert_eq!(b.hw.0.borrow().gsts & IRES, 0);
    let entry = Irte::remapped(0x41, 0, false, 0x20).unwrap();
    assert!(b.unit.set_irte(0, entry).is_err());
}

#[test]
fn a_unit_without_ecap_ir_reports_it() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP & !(1 << 3));
    b.unit.enable().unwrap();
    assert!(
        matches!(b.unit.interrupt_remapping(), IrState::Unavailable(w) if w.contains("ECAP.IR"))
    );
}

#[test]
fn interrupt_fault_records_name_the_index_not_an_address() {
    let hi = (1u64 << 63) | (0x26 << 32) | 0x0028;
    let record = FaultRecord::decode(0, 0x00FF_u64 << 48, hi).unwrap();
    assert_eq!(record.interrupt_index, Some(0xFF));
    let text = record.to_string();
    assert!(text.contains("interrupt request refused from 00:05.0 (index 0xff)"), "{text}");
    assert!(text.contains("source id verification failed"), "{text}");
    for reason in 0x20..=0x26u8 {
        let r = FaultRecord::decode(0, 0, (1 << 63) | (u64::from(reason) << 32)).unwrap();
        assert!(r.reason_text().starts_with("interrupt:"), "{reason:#x}");
    }
    let dma = FaultRecord::decode(0, 0x1000, (1 << 63) | (5 << 32)).unwrap();
    assert_eq!(dma.interrupt_index, None);
}

#[test]
fn remappable_messages_carry_the_handle() {
    assert_eq!(remappable_msi(0), (0xFEE0_0010, 0));
    assert_eq!(remappable_msi(0x00FF), (0xFEE0_0010 | (0xFF << 5), 0));
    assert_eq!(remappable_msi(0x8001), (0xFEE0_0010 | (1 << 5) | (1 << 2), 0));
}
