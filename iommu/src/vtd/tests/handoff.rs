//! Taking a unit over the way firmware leaves one (register models of what QEMU cannot
//! show): translation on, a queue running (drained, stuck, or halted by an error), stale
//! FSTS errors, protected memory regions, and status bits that lag their command bits.

use super::model::{Event, Inv, QEMU_CAP, QEMU_ECAP};
use super::{bench, Bench};
use crate::error::HwError;
use crate::platform::{FrameAllocator, PhysMemory};

const TE_QIE: u32 = (1 << 31) | (1 << 26);

/// A unit with firmware's queue running in a frame of its own (IQA), `pending`
/// descriptors of firmware's still ahead of IQH, and `gsts` set.
fn firmware_left(cap: u64, gsts: u32, pending: u64) -> (Bench, u64) {
    let b = bench(cap, QEMU_ECAP);
    let queue = b.mem.clone().alloc_zeroed_frame().unwrap();
    {
        let mut hw = b.hw.0.borrow_mut();
        hw.gsts |= gsts;
        hw.set_queue_base(queue);
        hw.iqt = 16 * pending;
        hw.firmware.pending = pending;
    }
    (b, queue)
}
/// CAP.PLMR and CAP.PHMR.
const PMR_CAP: u64 = (1 << 5) | (1 << 6);

#[test]
fn translation_left_on_stays_on_while_the_new_root_is_latched() {
    let (b, _) = firmware_left(QEMU_CAP, TE_QIE, 0);
    let mut unit = b.unit;
    unit.enable().unwrap();
    let hw = b.hw.0.borrow();
    // Never a moment without translation: no Translation(false) at all.
    assert!(!hw.events.contains(&Event::Translation(false)), "{:?}", hw.events);
    // Firmware's queue fenced with a wait descriptor, then off, then the new root.
    assert!(matches!(hw.events[0], Event::Queued(Inv::Wait { data: 0x600D, .. })));
    assert_eq!(hw.events[1], Event::Queue(false));
    assert_eq!(hw.events[2], Event::SetRootTable(unit.root_table_address()));
    assert_eq!(hw.events[3], Event::Queue(true));
    assert!(hw.gsts & (1 << 31) != 0);
    let h = unit.hand_off();
    assert!(h.translation_was_on && h.firmware_queue_stopped && !h.firmware_queue_timed_out);
    // The global invalidations come after the new root and before the first attach.
    let global = Event::Queued(Inv::Context(crate::vtd::ContextInvalidation::Global));
    let inv = hw.events.iter().position(|e| *e == global).unwrap();
    assert!(inv > 3, "{:?}", hw.events);
}

#[test]
fn a_drained_firmware_queue_loses_nothing() {
    let (b, _) = firmware_left(QEMU_CAP, 1 << 26, 4);
    let mut unit = b.unit;
    unit.enable().unwrap();
    assert_eq!(b.hw.0.borrow().firmware.dropped, 0, "QIE cleared with descriptors pending");
    assert!(!unit.hand_off().firmware_queue_timed_out);
}

#[test]
fn a_stuck_firmware_queue_is_stopped_anyway_and_reported() {
    let (b, _) = firmware_left(QEMU_CAP, TE_QIE, 4);
    b.hw.0.borrow_mut().firmware.stuck = true;
    let mut unit = b.unit;
    unit.enable().expect("a stuck firmware queue does not stop the take-over");
    let hw = b.hw.0.borrow();
    assert_eq!(hw.firmware.dropped, 4, "firmware's descriptors were dropped");
    assert!(unit.hand_off().firmware_queue_timed_out);
    assert!(unit.is_enabled());
    assert!(!hw.events.contains(&Event::Translation(false)));
    // Our own queue works after the reset.
    assert!(hw.events.iter().any(|e| matches!(e, Event::Queued(_))));
}

#[test]
fn stale_queue_errors_are_cleared_before_the_queue_is_used() {
    let b = bench(QEMU_CAP, QEMU_ECAP);
    // IQE halts the model's queue (as hardware's) until cleared: without the clearing the
    // first wait descriptor would time out.
    b.hw.0.borrow_mut().fsts = (1 << 4) | (1 << 6) | 1;
    let mut unit = b.unit;
    unit.enable().unwrap();
    assert_eq!(b.hw.0.borrow().fsts & 0x71, 0);
    assert_eq!(unit.hand_off().stale_errors, (1 << 4) | (1 << 6) | 1);
}

#[test]
fn protected_memory_regions_go_off_only_after_translation_is_on() {
    let b = bench(QEMU_CAP | PMR_CAP, QEMU_ECAP);
    b.hw.0.borrow_mut().pmen = (1 << 31) | 1;
    let mut unit = b.unit;
    unit.enable().unwrap();
    let hw = b.hw.0.borrow();
    assert_eq!(hw.pmen, 0);
    let on = hw.events.iter().position(|e| *e == Event::Translation(true)).unwrap();
    let off = hw.events.iter().position(|e| *e == Event::ProtectedRegions(false)).unwrap();
    assert!(off > on, "PMRs disabled before translation was on: {:?}", hw.events);
    assert!(unit.hand_off().pmr_disabled);
}

#[test]
fn protected_regions_are_left_alone_without_plmr_or_phmr_and_a_stuck_prs_times_out() {
    // The model panics on a PMEN write without PLMR/PHMR.
    let b = bench(QEMU_CAP, QEMU_ECAP);
    let mut unit = b.unit;
    unit.enable().unwrap();
    assert!(!unit.hand_off().pmr_disabled);

    let b = bench(QEMU_CAP | PMR_CAP, QEMU_ECAP);
    {
        let mut hw = b.hw.0.borrow_mut();
        hw.pmen = (1 << 31) | 1;
        hw.pmen_stuck = true;
    }
    let mut unit = b.unit;
    assert_eq!(
        unit.enable(),
        Err(HwError::Timeout { what: "PMEN.PRS clear (protected memory regions off)" })
    );
}

#[test]
fn status_bits_that_lag_their_commands_are_waited_for() {
    for lag in [1, 5, 40] {
        let (b, _) = firmware_left(QEMU_CAP, TE_QIE, 0);
        b.hw.0.borrow_mut().lag = lag;
        let mut unit = b.unit;
        unit.enable().unwrap_or_else(|e| panic!("lag {lag}: {e}"));
        let hw = b.hw.0.borrow();
        // Had a GCMD been built from stale GSTS, QIE or TE would have been undone.
        assert_eq!(hw.gsts & TE_QIE, TE_QIE, "lag {lag}");
        assert!(!hw.events.contains(&Event::Translation(false)), "lag {lag}: {:?}", hw.events);
        assert_eq!(hw.events.iter().filter(|e| **e == Event::Queue(false)).count(), 1);
    }
}

#[test]
fn a_queue_halted_on_a_bad_descriptor_gets_it_replaced_and_drains() {
    let (b, queue) = firmware_left(QEMU_CAP, TE_QIE, 4);
    b.hw.0.borrow_mut().firmware.pending = 3;
    b.hw.0.borrow_mut().fsts = 1 << 4;
    let mut unit = b.unit;
    unit.enable().unwrap();
    let h = unit.hand_off();
    assert!(h.bad_descriptor_replaced && !h.firmware_queue_timed_out, "{h:?}");
    assert_eq!(b.hw.0.borrow().firmware.dropped, 0, "the halted queue drained after the fix-up");
    // The descriptor at firmware's head (IQH 0x10 while halted) is now a global context
    // invalidation.
    assert_eq!(b.mem.read_u64(queue + 0x10), 0x11);
}
