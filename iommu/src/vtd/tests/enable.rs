//! Discovery, the enable sequence, the GCMD/GSTS discipline and bounded polls.

use super::model::{Event, Inv, QEMU_CAP, QEMU_ECAP};
use super::{bench, qemu_enabled};
use crate::error::HwError;
use crate::vtd::invalidation::{ContextInvalidation, IotlbInvalidation};
use crate::vtd::InvalidationMode;

/// QEMU with `aw-bits=48`: SAGAW 3- and 4-level, MGAW 47.
const CAP_48: u64 = (QEMU_CAP & !(0x1F << 8) & !(0x3F << 16)) | (0x6 << 8) | (47 << 16);

#[test]
fn picks_depth_from_sagaw_and_mgaw() {
    let b = bench(QEMU_CAP, QEMU_ECAP);
    assert_eq!(b.unit.levels(), 3);
    assert_eq!(b.unit.address_width(), 39);
    let b = bench(CAP_48, QEMU_ECAP);
    assert_eq!(b.unit.levels(), 4);
    assert_eq!(b.unit.address_width(), 48);
}

#[test]
fn rejects_unit_without_3_or_4_level_tables() {
    let mem = super::SharedMemory::new();
    let cap = (QEMU_CAP & !(0x1F << 8)) | (0x8 << 8); // 5-level only
    let hw = super::VtdModel::shared(cap, QEMU_ECAP, mem.clone());
    let err = crate::vtd::VtdUnit::new(hw, mem).err();
    assert!(matches!(err, Some(HwError::Unsupported { .. })), "{err:?}");
}

#[test]
fn page_sizes_follow_sllps() {
    use crate::pgtable::PteFormat;
    let b = bench(QEMU_CAP, QEMU_ECAP);
    let sizes = b.unit.domain_format().unwrap().page_sizes();
    assert_eq!(sizes, (1 << 12) | (1 << 21) | (1 << 30));
    let b = bench(QEMU_CAP & !(0xF << 34), QEMU_ECAP);
    assert_eq!(b.unit.domain_format().unwrap().page_sizes(), 1 << 12);
}

#[test]
fn four_level_domain_on_a_39_bit_unit_refuses_iovas_above_mgaw() {
    use crate::pgtable::{MapError, PageTable, Prot};
    // SAGAW offers only 4-level tables, but MGAW says 39 bits.
    let cap = (QEMU_CAP & !(0x1F << 8) & !(0x3F << 16)) | (0x4 << 8) | (38 << 16);
    let mut b = bench(cap, QEMU_ECAP);
    assert_eq!(b.unit.levels(), 4);
    let format = b.unit.domain_format().unwrap();
    let mut table = PageTable::new(&mut b.mem, format).unwrap();
    assert_eq!(table.aperture(), 1 << 39);
    let err = table.map(&mut b.mem, 1 << 39, 0x1000_0000, 0x1000, Prot::READ);
    assert_eq!(err, Err(MapError::BadRange));
    table.map(&mut b.mem, (1 << 39) - 0x1000, 0x1000_0000, 0x1000, Prot::READ).unwrap();
}

#[test]
fn describe_names_capabilities_in_words() {
    let b = bench(QEMU_CAP, QEMU_ECAP);
    let text = b.unit.describe().join("\n");
    for needle in [
        "3-level (39-bit)",
        "MGAW) 39 bits",
        "4K, 2M, 1G",
        "65536 ids",
        "caching mode (CM): no",
        "MAMV) 18",
        "fault records (NFR): 1 at offset 0x220",
        "queued invalidation (QI): yes",
        "IOTLB registers at 0xf0",
        "coherent table walks (C): no",
        "pass-through (PT): yes",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let cm = bench(QEMU_CAP | (1 << 7), QEMU_ECAP).unit.describe().join("\n");
    assert!(cm.contains("caching mode (CM): yes"), "{cm}");
}

#[test]
fn queued_enable_follows_the_sequence() {
    let b = qemu_enabled();
    let hw = b.hw.0.borrow();
    let root = b.unit.root_table_address();
    let order: Vec<Event> =
        hw.events.iter().copied().filter(|e| !matches!(e, Event::FaultControl(_))).collect();
    assert_eq!(
        order,
        vec![
            Event::SetRootTable(root),
            Event::Queue(true),
            Event::Queued(Inv::Context(ContextInvalidation::Global)),
            Event::Queued(Inv::Iotlb(IotlbInvalidation::Global)),
            order[4], // the wait descriptor, checked below
            Event::SetInterruptTable(b.unit.irt_address().unwrap() | 7),
            Event::Queued(Inv::InterruptEntries(None)),
            order[7],
            Event::InterruptRemapping(true),
            Event::Translation(true),
        ]
    );
    assert!(matches!(order[4], Event::Queued(Inv::Wait { .. })));
    assert!(matches!(order[7], Event::Queued(Inv::Wait { .. })));
    assert_eq!(hw.srtp_count, 1);
    assert!(b.unit.is_enabled());
}

#[test]
fn register_mode_enable_uses_registers_only() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    b.unit.set_invalidation_mode(InvalidationMode::Register).unwrap();
    b.unit.enable().unwrap();
    let hw = b.hw.0.borrow();
    assert_eq!(
        hw.events,
        vec![
            Event::SetRootTable(b.unit.root_table_address()),
            Event::Register(Inv::Context(ContextInvalidation::Global)),
            Event::Register(Inv::Iotlb(IotlbInvalidation::Global)),
            Event::Translation(true),
        ]
    );
}

#[test]
fn queued_mode_needs_ecap_qi() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP & !2);
    assert_eq!(b.unit.invalidation_mode(), InvalidationMode::Register);
    assert!(b.unit.set_invalidation_mode(InvalidationMode::Queued).is_err());
    b.unit.enable().unwrap();
    assert!(!b.hw.0.borrow().events.contains(&Event::Queue(true)));
}

#[test]
fn mode_cannot_change_after_enable() {
    let mut b = qemu_enabled();
    assert!(b.unit.set_invalidation_mode(InvalidationMode::Register).is_err());
}

#[test]
fn gcmd_never_reissues_srtp() {
    // The model latches a new root (and flushes everything) whenever GCMD has bit 30 set;
    // GSTS.RTPS sits at that bit and stays set, so building GCMD from raw GSTS would show.
    let mut b = qemu_enabled();
    b.unit.flush_write_buffer().unwrap();
    b.unit.attach_device(0x0010, 5, 0x20_0000, 3).unwrap();
    b.unit.detach_device(0x0010).unwrap();
    b.unit.disable().unwrap();
    b.unit.enable().unwrap();
    let hw = b.hw.0.borrow();
    assert_eq!(hw.srtp_count, 2, "one SRTP per enable");
    assert!(!hw.events.iter().any(|e| matches!(e, Event::UnexpectedOneShot(_))));
}

fn enable_with_stuck(
    configure: impl FnOnce(&mut super::model::Stuck),
    mode: InvalidationMode,
) -> HwError {
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    b.unit.set_invalidation_mode(mode).unwrap();
    configure(&mut b.hw.0.borrow_mut().stuck);
    b.unit.enable().expect_err("a stuck unit must time out")
}

#[test]
fn every_enable_poll_times_out_with_its_condition() {
    let q = InvalidationMode::Queued;
    let r = InvalidationMode::Register;
    type Case = (fn(&mut super::model::Stuck), InvalidationMode, &'static str);
    let cases: [Case; 6] = [
        (|s| s.gsts |= 1 << 30, q, "GSTS.RTPS set"),
        (|s| s.gsts |= 1 << 31, q, "GSTS.TES set"),
        (|s| s.gsts |= 1 << 26, q, "GSTS.QIES set"),
        (|s| s.queue = true, q, "invalidation wait descriptor status write"),
        (|s| s.ccmd = true, r, "CCMD.ICC clear"),
        (|s| s.iotlb = true, r, "IOTLB.IVT clear"),
    ];
    for (stuck, mode, what) in cases {
        assert_eq!(enable_with_stuck(stuck, mode), HwError::Timeout { what });
    }
}

#[test]
fn out_of_memory_is_reported() {
    let mem = super::SharedMemory::new();
    mem.0.borrow_mut().frames_left = Some(1); // root table only, nothing for the queue
    let hw = super::VtdModel::shared(QEMU_CAP, QEMU_ECAP, mem.clone());
    let mut unit = crate::vtd::VtdUnit::new(hw, mem).unwrap();
    assert_eq!(unit.enable(), Err(HwError::OutOfMemory));
}

#[test]
fn write_buffer_flush_only_when_rwbf() {
    let mut plain = qemu_enabled();
    plain.unit.flush_write_buffer().unwrap();
    assert!(!plain.hw.0.borrow().events.contains(&Event::WriteBufferFlush));

    let mut b = bench(QEMU_CAP | (1 << 4), QEMU_ECAP);
    b.unit.enable().unwrap();
    assert!(b.hw.0.borrow().events.contains(&Event::WriteBufferFlush));
    b.hw.0.borrow_mut().stuck.gsts |= 1 << 27;
    assert_eq!(
        b.unit.flush_write_buffer(),
        Err(HwError::Timeout { what: "GSTS.WBFS clear (write buffer flush)" })
    );
}

#[test]
fn the_rwbf_erratum_flushes_without_cap_rwbf() {
    use crate::vtd::handoff::Quirks;
    assert!(crate::vtd::quirks::needs_write_buffer_flush((0x8086, 0x2a40)));
    assert!(!crate::vtd::quirks::needs_write_buffer_flush((0x8086, 0x29c0)));
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    b.unit.set_quirks(Quirks { write_buffer_flush: true });
    b.unit.enable().unwrap();
    assert!(b.hw.0.borrow().events.contains(&Event::WriteBufferFlush));
}

#[test]
fn depth_can_be_lowered_before_enable_only() {
    let mut b = bench(CAP_48, QEMU_ECAP);
    b.unit.set_levels(3).unwrap();
    assert_eq!((b.unit.levels(), b.unit.address_width()), (3, 39));
    assert!(b.unit.set_levels(5).is_err());
    let mut q = bench(QEMU_CAP, QEMU_ECAP);
    assert!(q.unit.set_levels(4).is_err(), "SAGAW 0x2 has no 4-level");
    q.unit.enable().unwrap();
    assert!(q.unit.set_levels(3).is_err(), "not after enable");
}

#[test]
fn builder_form_selects_register_mode() {
    let mem = super::SharedMemory::new();
    let hw = super::VtdModel::shared(QEMU_CAP, QEMU_ECAP, mem.clone());
    let unit = crate::vtd::VtdUnit::new(hw, mem)
        .and_then(|u| u.with_invalidation_mode(InvalidationMode::Register))
        .unwrap();
    assert_eq!(unit.invalidation_mode(), InvalidationMode::Register);
}
