//! Root/context entry layout and attach/detach with their invalidations.

use super::model::{Event, Inv, QEMU_CAP, QEMU_ECAP};
use super::{bench, qemu_enabled, Bench};
use crate::error::HwError;
use crate::vtd::context::ContextEntry;
use crate::vtd::invalidation::{ContextInvalidation, IotlbInvalidation};

fn mark(b: &Bench) -> usize {
    b.hw.0.borrow().invalidations().len()
}

fn since(b: &Bench, m: usize) -> Vec<Inv> {
    b.hw.0.borrow().invalidations()[m..].to_vec()
}

/// Reads the entry straight from model memory, walking root -> context as hardware does.
fn raw_context(b: &Bench, rid: u16) -> (u64, u64, u64) {
    let mem = b.mem.0.borrow();
    let root = mem.read(b.unit.root_table_address() + u64::from(rid >> 8) * 16);
    let table = root & !0xFFF;
    let at = table + u64::from(rid & 0xFF) * 16;
    (root, mem.read(at), mem.read(at + 8))
}

#[test]
fn context_entry_bit_layout() {
    let e = ContextEntry::translated(0xBEEF, 0x1234_5000, 4);
    assert_eq!(e.lo, 0x1234_5000 | 1, "P set, FPD 0, TT 0, root in 63:12");
    assert_eq!(e.hi, (0xBEEF << 8) | 2, "AW = levels - 2, DID in 23:8");
    assert_eq!((e.domain(), e.root(), e.levels(), e.present()), (0xBEEF, 0x1234_5000, 4, true));
    assert!(!e.fault_processing_disabled());
    assert_eq!(e.translation_type(), 0);
}

#[test]
fn attach_writes_entries_then_invalidates() {
    let mut b = qemu_enabled();
    let rid = 0x0118; // bus 1, device 3, function 0
    let m = mark(&b);
    b.unit.attach_device(rid, 12, 0x40_0000, 3).unwrap();
    let (root, lo, hi) = raw_context(&b, rid);
    assert_eq!(root & 1, 1, "root entry present");
    assert_eq!(lo, 0x40_0000 | 1);
    assert_eq!(hi, (12 << 8) | 1);
    let got = since(&b, m);
    assert_eq!(got[0], Inv::Context(ContextInvalidation::Device { domain: 12, source: rid }));
    assert_eq!(got[1], Inv::Iotlb(IotlbInvalidation::Domain(12)));
    assert!(matches!(got[2], Inv::Wait { .. }));
    // A second device on the same bus reuses the bus's context table.
    b.unit.attach_device(rid + 1, 12, 0x40_0000, 3).unwrap();
    assert_eq!(raw_context(&b, rid + 1).0, root);
}

#[test]
fn detach_clears_then_invalidates_the_old_domain() {
    let mut b = qemu_enabled();
    b.unit.attach_device(0x0010, 12, 0x40_0000, 3).unwrap();
    let m = mark(&b);
    assert_eq!(b.unit.detach_device(0x0010), Ok(Some(12)));
    assert_eq!(raw_context(&b, 0x0010).1, 0);
    let got = since(&b, m);
    assert_eq!(got[0], Inv::Context(ContextInvalidation::Device { domain: 12, source: 0x0010 }));
    assert_eq!(got[1], Inv::Iotlb(IotlbInvalidation::Domain(12)));
    assert_eq!(b.unit.detach_device(0x0010), Ok(None), "second detach is a no-op");
}

#[test]
fn reattach_moves_device_and_flushes_both_domains() {
    let mut b = qemu_enabled();
    b.unit.attach_device(0x0010, 12, 0x40_0000, 3).unwrap();
    let m = mark(&b);
    b.unit.attach_device(0x0010, 13, 0x50_0000, 3).unwrap();
    let got = since(&b, m);
    assert_eq!(got[0], Inv::Context(ContextInvalidation::Device { domain: 12, source: 0x0010 }));
    assert_eq!(got[1], Inv::Iotlb(IotlbInvalidation::Domain(12)));
    assert!(got.contains(&Inv::Context(ContextInvalidation::Device { domain: 13, source: 0x0010 })));
    assert!(got.contains(&Inv::Iotlb(IotlbInvalidation::Domain(13))));
    let e = b.unit.context_entry(0x0010);
    assert_eq!((e.domain(), e.root()), (13, 0x50_0000));
}

#[test]
fn attach_before_enable_only_writes_tables() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    b.unit.attach_device(0x0010, 1, 0x40_0000, 3).unwrap();
    assert!(b.hw.0.borrow().invalidations().is_empty());
    assert_eq!(b.unit.context_entry(0x0010).domain(), 1);
}

#[test]
fn attach_validates_depth_and_domain() {
    let mut b = qemu_enabled();
    assert!(matches!(
        b.unit.attach_device(0x10, 1, 0x40_0000, 4),
        Err(HwError::Unsupported { .. })
    ));
    let cap = (QEMU_CAP & !7) | 1; // ND = 1: 64 domain ids
    let mut small = bench(cap, QEMU_ECAP);
    assert!(small.unit.attach_device(0x10, 63, 0x40_0000, 3).is_ok());
    assert!(matches!(
        small.unit.attach_device(0x10, 64, 0x40_0000, 3),
        Err(HwError::Unsupported { .. })
    ));
}

#[test]
fn caching_mode_invalidates_context_under_domain_zero() {
    let mut b = bench(QEMU_CAP | (1 << 7), QEMU_ECAP);
    b.unit.enable().unwrap();
    assert!(matches!(
        b.unit.attach_device(0x10, 0, 0x40_0000, 3),
        Err(HwError::Unsupported { .. })
    ));
    let m = mark(&b);
    b.unit.attach_device(0x10, 5, 0x40_0000, 3).unwrap();
    let got = since(&b, m);
    assert_eq!(got[0], Inv::Context(ContextInvalidation::Device { domain: 0, source: 0x10 }));
    assert_eq!(got[1], Inv::Iotlb(IotlbInvalidation::Domain(5)));
}

#[test]
fn non_coherent_unit_flushes_every_entry_write() {
    let mut b = qemu_enabled(); // QEMU reports ECAP.C = 0
    b.unit.attach_device(0x0208, 3, 0x40_0000, 3).unwrap();
    let root = b.unit.root_table_address();
    let table = raw_context(&b, 0x0208).0 & !0xFFF;
    {
        let mem = b.mem.0.borrow();
        assert!(mem.was_flushed(root + 2 * 16, 16), "root entry flushed");
        assert!(mem.was_flushed(table + 8 * 16, 16), "context entry flushed");
        assert!(mem.was_flushed(table, 4096), "new table flushed after zeroing");
        assert_eq!(mem.dirty_in(root), vec![], "no root-table line left unflushed");
        assert_eq!(mem.dirty_in(table), vec![], "no context-table line left unflushed");
    }
    b.unit.detach_device(0x0208).unwrap();
    assert_eq!(b.mem.0.borrow().dirty_in(table), vec![], "detach flushes too");

    let mut c = bench(QEMU_CAP, QEMU_ECAP | 1);
    c.unit.enable().unwrap();
    c.unit.attach_device(0x0208, 3, 0x40_0000, 3).unwrap();
    assert!(c.mem.0.borrow().flushes.is_empty(), "coherent units need no flush");
}

#[test]
fn pass_through_needs_ecap_pt_and_keeps_a_valid_width() {
    let mut b = qemu_enabled();
    b.unit.attach_pass_through(0x0010, 9).unwrap();
    let (_, lo, hi) = raw_context(&b, 0x0010);
    assert_eq!(lo, (2 << 2) | 1, "TT = 2, P");
    assert_eq!(hi, (9 << 8) | 1, "AW of the unit's depth, DID");
    let mut no_pt = bench(QEMU_CAP, QEMU_ECAP & !(1 << 6));
    assert!(matches!(no_pt.unit.attach_pass_through(0x10, 9), Err(HwError::Unsupported { .. })));
}

#[test]
fn register_mode_attach_and_detach_use_ccmd_and_iotlb_registers() {
    use super::model::Event;
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    b.unit.set_invalidation_mode(crate::vtd::InvalidationMode::Register).unwrap();
    b.unit.enable().unwrap();
    let m = b.hw.0.borrow().events.len();
    b.unit.attach_device(0x0310, 0x0ABC, 0x40_0000, 3).unwrap();
    b.unit.detach_device(0x0310).unwrap();
    b.unit.invalidate_context(ContextInvalidation::Domain(0x0ABC)).unwrap();
    let events = b.hw.0.borrow().events[m..].to_vec();
    let device = ContextInvalidation::Device { domain: 0x0ABC, source: 0x0310 };
    assert_eq!(
        events,
        vec![
            Event::Register(Inv::Context(device)),
            Event::Register(Inv::Iotlb(IotlbInvalidation::Domain(0x0ABC))),
            Event::Register(Inv::Context(device)),
            Event::Register(Inv::Iotlb(IotlbInvalidation::Domain(0x0ABC))),
            Event::Register(Inv::Context(ContextInvalidation::Domain(0x0ABC))),
        ]
    );
}

/// Firmware-reserved identity domains go in before enable: on a caching-mode unit the
/// after-map flush then issues nothing (nothing can be cached yet), and enable latches a
/// root table that already holds the entry, invalidates globally, and only then sets TE.
#[test]
fn an_identity_entry_installed_before_enable_is_live_when_translation_goes_on() {
    let mut b = bench(QEMU_CAP | (1 << 7), QEMU_ECAP);
    b.unit.attach_device(0x00F8, 1, 0x40_0000, 3).unwrap();
    b.unit.flush_after_map(1, crate::invalidate::IovaBlock { iova: 0xE_0000, order: 12 }).unwrap();
    assert!(b.hw.0.borrow().invalidations().is_empty(), "no invalidation before enable");
    b.unit.enable().unwrap();
    assert_eq!(b.unit.context_entry(0x00F8).domain(), 1, "the entry survives enable");
    let events = b.hw.0.borrow().events.clone();
    let root = events.iter().position(|e| matches!(e, Event::SetRootTable(_))).unwrap();
    let te = events.iter().position(|e| matches!(e, Event::Translation(true))).unwrap();
    let global = events.iter().position(|e| {
        matches!(
            e,
            Event::Register(Inv::Iotlb(IotlbInvalidation::Global))
                | Event::Queued(Inv::Iotlb(IotlbInvalidation::Global))
        )
    });
    assert!(root < te, "root table latched before TE");
    assert!(global.is_some_and(|g| root < g && g < te), "global IOTLB flush between: {events:?}");
}
