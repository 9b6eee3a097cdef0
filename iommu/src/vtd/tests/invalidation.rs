//! Descriptor encodings, the IOTLB flush contract, mask limits, CM and queue behaviour.

use super::model::{Event, Inv, QEMU_CAP, QEMU_ECAP};
use super::{bench, qemu_enabled, Bench};
use crate::error::HwError;
use crate::invalidate::{IotlbInvalidator, IovaBlock};
use crate::vtd::invalidation::{ContextInvalidation, Descriptor, Drain, IotlbInvalidation};
use crate::vtd::InvalidationMode;

fn new_invalidations(b: &Bench, since: usize) -> Vec<Inv> {
    b.hw.0.borrow().invalidations()[since..].to_vec()
}

fn mark(b: &Bench) -> usize {
    b.hw.0.borrow().invalidations().len()
}

#[test]
fn descriptor_bit_layouts() {
    let d = Descriptor::iotlb(
        IotlbInvalidation::Page { domain: 0x1234, address: 0xABC_D000, mask: 3 },
        Drain { reads: true, writes: true },
    );
    assert_eq!(d.lo, 0x1234_0000 | (1 << 7) | (1 << 6) | (3 << 4) | 2);
    assert_eq!(d.hi, 0xABC_D000 | 3);
    let d = Descriptor::context(ContextInvalidation::Device { domain: 7, source: 0x00F8 });
    assert_eq!((d.lo, d.hi), ((0xF8 << 32) | (7 << 16) | (3 << 4) | 1, 0));
    let d = Descriptor::context(ContextInvalidation::Domain(9));
    assert_eq!(d.lo, (9 << 16) | (2 << 4) | 1);
    let d = Descriptor::wait(0x30_0008, 0xCAFE);
    assert_eq!(d.lo, (0xCAFE << 32) | (1 << 5) | 5, "status write only, never IF");
    assert_eq!(d.hi, 0x30_0008);
}

#[test]
fn block_becomes_page_selective_with_mask_and_did() {
    let mut b = qemu_enabled();
    let m = mark(&b);
    b.unit.invalidate_block(42, IovaBlock { iova: 0x4020_0000, order: 21 }).unwrap();
    b.unit.sync().unwrap();
    let got = new_invalidations(&b, m);
    assert_eq!(
        got[0],
        Inv::Iotlb(IotlbInvalidation::Page { domain: 42, address: 0x4020_0000, mask: 9 })
    );
    assert!(matches!(got[1], Inv::Wait { .. }));
    // Drain bits follow CAP.DRD/DWD (both set on QEMU).
    let (lo, _) = *b.hw.0.borrow().descriptors.iter().rev().nth(1).unwrap();
    assert_eq!(lo & 0xC0, 0xC0);
    assert_eq!(b.unit.invalidation_counts().iotlb_page, 1);
}

#[test]
fn mask_limited_by_mamv_else_domain_selective() {
    let mut b = qemu_enabled();
    assert_eq!(b.unit.max_block_order(), 12 + 18);
    let m = mark(&b);
    b.unit.invalidate_block(3, IovaBlock { iova: 0, order: 30 }).unwrap();
    b.unit.invalidate_block(3, IovaBlock { iova: 0, order: 31 }).unwrap();
    b.unit.sync().unwrap();
    assert_eq!(
        new_invalidations(&b, m)[..2],
        [
            Inv::Iotlb(IotlbInvalidation::Page { domain: 3, address: 0, mask: 18 }),
            Inv::Iotlb(IotlbInvalidation::Domain(3)),
        ]
    );
    // A smaller MAMV lowers the limit.
    let cap = (QEMU_CAP & !(0x3F << 48)) | (2 << 48);
    let mut b = bench(cap, QEMU_ECAP);
    b.unit.enable().unwrap();
    assert_eq!(b.unit.max_block_order(), 14);
    let m = mark(&b);
    b.unit.invalidate_block(3, IovaBlock { iova: 0x8000, order: 15 }).unwrap();
    b.unit.sync().unwrap();
    assert_eq!(new_invalidations(&b, m)[0], Inv::Iotlb(IotlbInvalidation::Domain(3)));
}

#[test]
fn no_psi_means_domain_selective() {
    let mut b = bench(QEMU_CAP & !(1 << 39), QEMU_ECAP);
    b.unit.enable().unwrap();
    assert_eq!(b.unit.max_block_order(), 63);
    let m = mark(&b);
    b.unit.invalidate_block(8, IovaBlock { iova: 0x1000, order: 12 }).unwrap();
    b.unit.sync().unwrap();
    assert_eq!(new_invalidations(&b, m)[0], Inv::Iotlb(IotlbInvalidation::Domain(8)));
}

#[test]
fn register_mode_page_selective_writes_iva() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    b.unit.set_invalidation_mode(InvalidationMode::Register).unwrap();
    b.unit.enable().unwrap();
    b.unit.invalidate_block(77, IovaBlock { iova: 0x1_0000_0000, order: 13 }).unwrap();
    b.unit.invalidate_domain(77).unwrap();
    b.unit.sync().unwrap();
    let events = b.hw.0.borrow().events.clone();
    let n = events.len();
    assert_eq!(
        events[n - 2..],
        [
            Event::Register(Inv::Iotlb(IotlbInvalidation::Page {
                domain: 77,
                address: 0x1_0000_0000,
                mask: 1
            })),
            Event::Register(Inv::Iotlb(IotlbInvalidation::Domain(77))),
        ]
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Queued(_))));
}

#[test]
fn misaligned_block_is_widened_not_shifted() {
    let mut b = qemu_enabled();
    let m = mark(&b);
    b.unit.invalidate_block(1, IovaBlock { iova: 0x3000, order: 13 }).unwrap();
    b.unit.sync().unwrap();
    assert_eq!(
        new_invalidations(&b, m)[0],
        Inv::Iotlb(IotlbInvalidation::Page { domain: 1, address: 0x2000, mask: 1 })
    );
}

#[test]
fn wait_descriptor_writes_status_into_memory() {
    let mut b = qemu_enabled();
    b.unit.sync().unwrap();
    b.unit.sync().unwrap();
    let waits: Vec<(u64, u32)> =
        b.hw.0
            .borrow()
            .invalidations()
            .iter()
            .filter_map(|i| match i {
                Inv::Wait { address, data } => Some((*address, *data)),
                _ => None,
            })
            .collect();
    assert_eq!(waits.len(), 4, "enable (translation, interrupt entries) + two syncs");
    assert_ne!(waits[2].1, waits[3].1, "each wait carries a fresh token");
    let word = b.mem.0.borrow().read(waits[3].0);
    assert_eq!(word as u32, waits[3].1);
}

#[test]
fn queue_wraps_around() {
    let mut b = qemu_enabled();
    for i in 0..600u64 {
        b.unit.invalidate_block(2, IovaBlock { iova: i << 12, order: 12 }).unwrap();
    }
    b.unit.sync().unwrap();
    let hw = b.hw.0.borrow();
    let pages = hw
        .invalidations()
        .iter()
        .filter(|i| matches!(i, Inv::Iotlb(IotlbInvalidation::Page { .. })))
        .count();
    assert_eq!(pages, 600);
}

#[test]
fn full_queue_on_a_stalled_unit_times_out() {
    let mut b = qemu_enabled();
    b.hw.0.borrow_mut().stuck.queue = true;
    let mut result = Ok(());
    let mut submitted = 0;
    while result.is_ok() && submitted < 300 {
        result = b.unit.invalidate_block(2, IovaBlock { iova: 0, order: 12 });
        submitted += 1;
    }
    let what = "invalidation queue space (IQH to move past the tail)";
    assert_eq!(result, Err(HwError::Timeout { what }));
    assert_eq!(submitted, 256, "255 descriptors fit in 256 slots, the next one waits");
    // Enable left five descriptors (context, IOTLB, wait, interrupt entries, wait) behind
    // the tail.
    let tail = (5 + 255) % 256;
    assert_eq!(b.hw.0.borrow().iqt, tail * 16, "the full ring was published before waiting");
}

#[test]
fn queue_error_is_reported() {
    let mut b = qemu_enabled();
    // The driver never builds a bad descriptor, so the model is told MAMV = 0 instead:
    // it now rejects the page-selective descriptor the driver (reading MAMV 18) sends.
    b.hw.0.borrow_mut().cap &= !(0x3F << 48);
    b.unit.invalidate_block(2, IovaBlock { iova: 0, order: 13 }).unwrap();
    assert_eq!(
        b.unit.sync(),
        Err(HwError::QueueError {
            what: "invalidation queue error (FSTS.IQE): a descriptor was rejected"
        })
    );
    assert_eq!(b.unit.fault_counters().queue_errors, 1);
    assert_eq!(b.hw.0.borrow().fsts & (1 << 4), 0, "IQE cleared");
    // The rejected descriptor was replaced, so the queue runs on.
    b.hw.0.borrow_mut().cap = QEMU_CAP;
    let m = mark(&b);
    b.unit.invalidate_domain(2).unwrap();
    b.unit.sync().unwrap();
    let got = new_invalidations(&b, m);
    assert!(got.contains(&Inv::Iotlb(IotlbInvalidation::Domain(2))), "{got:?}");
}

#[test]
fn queued_mode_never_touches_invalidation_registers() {
    let mut b = qemu_enabled();
    b.unit.invalidate_all().unwrap();
    b.unit.attach_device(0x0008, 4, 0x20_0000, 3).unwrap();
    assert!(!b.hw.0.borrow().events.iter().any(|e| matches!(e, Event::Register(_))));
}

#[test]
fn caching_mode_invalidates_after_map() {
    let mut cm = bench(QEMU_CAP | (1 << 7), QEMU_ECAP);
    cm.unit.enable().unwrap();
    assert!(cm.unit.caching_mode());
    let m = mark(&cm);
    cm.unit.flush_after_map(6, IovaBlock { iova: 0x20_0000, order: 21 }).unwrap();
    let got = new_invalidations(&cm, m);
    assert_eq!(
        got[0],
        Inv::Iotlb(IotlbInvalidation::Page { domain: 6, address: 0x20_0000, mask: 9 })
    );
    assert!(matches!(got[1], Inv::Wait { .. }));

    let mut plain = qemu_enabled();
    let m = mark(&plain);
    plain.unit.flush_after_map(6, IovaBlock { iova: 0x20_0000, order: 21 }).unwrap();
    assert!(new_invalidations(&plain, m).is_empty());
}

#[test]
fn rwbf_flushes_write_buffer_after_map() {
    let mut b = bench(QEMU_CAP | (1 << 4), QEMU_ECAP);
    b.unit.enable().unwrap();
    let before = b.unit.invalidation_counts().write_buffer_flushes;
    b.unit.flush_after_map(6, IovaBlock { iova: 0, order: 12 }).unwrap();
    assert_eq!(b.unit.invalidation_counts().write_buffer_flushes, before + 1);
}

#[test]
fn invalidate_all_is_global() {
    let mut b = qemu_enabled();
    let m = mark(&b);
    b.unit.invalidate_all().unwrap();
    let got = new_invalidations(&b, m);
    assert_eq!(got[0], Inv::Context(ContextInvalidation::Global));
    assert_eq!(got[1], Inv::Iotlb(IotlbInvalidation::Global));
    assert!(matches!(got[2], Inv::Wait { .. }));
}

#[test]
fn queued_invalidations_are_published_in_one_batch_at_sync() {
    let mut b = qemu_enabled();
    let doorbells = b.hw.0.borrow().doorbells;
    let m = mark(&b);
    for i in 0..10u64 {
        b.unit.invalidate_block(2, IovaBlock { iova: i << 12, order: 12 }).unwrap();
    }
    assert!(new_invalidations(&b, m).is_empty(), "not yet handed to the unit");
    b.unit.sync().unwrap();
    assert_eq!(new_invalidations(&b, m).len(), 11, "ten pages and the wait");
    assert_eq!(b.hw.0.borrow().doorbells, doorbells + 1, "one IQT write for the batch");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever block the core hands over, the unit receives an invalidation that covers it:
    /// page-selective with the block's DID, AM = order - 12 and the aligned address when
    /// the mask fits MAMV, domain-selective otherwise; in both mechanisms.
    #[test]
    fn any_block_is_covered(domain in 1u16.., page in 0u64..(1 << 27), order in 12u32..40, queued: bool) {
        let mut b = bench(QEMU_CAP, QEMU_ECAP);
        if !queued {
            b.unit.set_invalidation_mode(InvalidationMode::Register).unwrap();
        }
        b.unit.enable().unwrap();
        let iova = (page << 12) & !((1u64 << order) - 1);
        let m = mark(&b);
        b.unit.invalidate_block(domain, IovaBlock { iova, order }).unwrap();
        b.unit.sync().unwrap();
        let expected = if order - 12 <= 18 {
            IotlbInvalidation::Page { domain, address: iova, mask: order - 12 }
        } else {
            IotlbInvalidation::Domain(domain)
        };
        proptest::prop_assert_eq!(new_invalidations(&b, m)[0], Inv::Iotlb(expected));
    }
}
