//! Fault record decode/clear/overflow, the fault interrupt and the rate limiter.

use super::model::{Event, QEMU_CAP, QEMU_ECAP};
use super::{bench, qemu_enabled};
use crate::error::HwError;
use crate::ratelimit::RateLimiter;
use crate::vtd::fault::{fault_reason, FaultRecord};

#[test]
fn decode_record_fields() {
    let hi = (1u64 << 63) | (1 << 62) | (0x06 << 32) | 0x0118;
    let r = FaultRecord::decode(0, 0xDEAD_B123, hi).unwrap();
    assert_eq!(
        (r.source, r.address, r.reason, r.is_read, r.pasid),
        (0x0118, 0xDEAD_B000, 6, true, None)
    );
    assert_eq!(r.bdf(), crate::acpi::pci::Bdf::new(1, 3, 0).unwrap());
    assert_eq!(r.reason_text(), "read from a page without read permission (or not present)");
    let with_pasid = FaultRecord::decode(1, 0, hi | (1 << 31) | (0x12345 << 40)).unwrap();
    assert_eq!(with_pasid.pasid, Some(0x12345));
    assert!(FaultRecord::decode(0, 0, hi & !(1 << 63)).is_none(), "F clear = no record");
    let write = FaultRecord::decode(0, 0, (1u64 << 63) | (5 << 32)).unwrap();
    assert!(!write.is_read);
}

#[test]
fn reason_table() {
    assert_eq!(fault_reason(2), "context entry not present");
    assert_eq!(fault_reason(4), "address beyond the domain's address width");
    assert_eq!(fault_reason(0xC), "reserved bit set in second-level paging entry");
    assert_eq!(fault_reason(0x99), "unknown fault reason");
}

#[test]
fn reads_clears_and_counts_faults() {
    let mut b = qemu_enabled();
    b.hw.0.borrow_mut().inject_fault(0x0010, 0x7000_0000, 5, false);
    let mut seen = Vec::new();
    let scan = b.unit.handle_faults(|r| seen.push(*r));
    assert_eq!(scan.records, 1);
    assert!(!scan.overflow);
    assert_eq!(
        (seen[0].source, seen[0].address, seen[0].reason, seen[0].is_read),
        (0x10, 0x7000_0000, 5, false)
    );
    assert_eq!(b.hw.0.borrow().records[0].1 >> 63, 0, "F cleared");
    assert_eq!(b.hw.0.borrow().record_wide_writes, 0, "cleared with a 32-bit write at +12");
    assert_eq!(b.unit.handle_faults(|_| panic!("no new faults")).records, 0);
    let c = b.unit.fault_counters();
    assert_eq!((c.records, c.writes, c.reads), (1, 1, 0));
}

#[test]
fn overflow_is_cleared_and_counted() {
    let mut b = qemu_enabled();
    {
        let mut hw = b.hw.0.borrow_mut();
        hw.inject_fault(0x10, 0x1000, 6, true);
        hw.inject_fault(0x18, 0x2000, 6, true); // the only record is busy: PFO
        assert_eq!(hw.fsts & 1, 1);
    }
    let scan = b.unit.handle_faults(|_| {});
    assert!(scan.overflow);
    assert_eq!(scan.records, 1);
    assert_eq!(b.hw.0.borrow().fsts & 1, 0, "PFO cleared");
    assert_eq!(b.unit.fault_counters().overflows, 1);
}

#[test]
fn reads_every_record_from_fri() {
    let cap = (QEMU_CAP & !(0xFF << 40)) | (3 << 40); // four records
    let mut b = bench(cap, QEMU_ECAP);
    b.unit.enable().unwrap();
    {
        let mut hw = b.hw.0.borrow_mut();
        for i in 0..4u16 {
            hw.inject_fault(i, u64::from(i) << 12, 6, true);
        }
        hw.records[0].1 &= !(1 << 63); // record 0 already handled: FRI = 1
    }
    let mut sources = Vec::new();
    b.unit.handle_faults(|r| sources.push((r.index, r.source)));
    assert_eq!(sources, vec![(1, 1), (2, 2), (3, 3)]);
    assert!(b.hw.0.borrow().records.iter().all(|r| r.1 >> 63 == 0));
}

#[test]
fn fault_interrupt_programmed_with_32_bit_writes() {
    let mut b = bench(QEMU_CAP, QEMU_ECAP);
    b.unit.program_fault_interrupt(0x40, 3).unwrap();
    {
        let hw = b.hw.0.borrow();
        assert_eq!((hw.fedata, hw.feaddr, hw.feuaddr), (0x40, 0xFEE0_3000, 0));
        assert_eq!(hw.fectl & (1 << 31), 0, "unmasked");
    }
    // enable re-applies it (the model panics on any 64-bit write to these registers).
    b.hw.0.borrow_mut().fectl = 1 << 31;
    b.unit.enable().unwrap();
    assert_eq!(b.hw.0.borrow().fectl, 0);
    b.unit.mask_fault_interrupt();
    assert_eq!(b.hw.0.borrow().events.last(), Some(&Event::FaultControl(1 << 31)));
    assert_eq!(
        b.unit.program_fault_interrupt(0x40, 300),
        Err(HwError::Unsupported { what: "an APIC id above 255 without x2APIC mode (ECAP.EIM)" })
    );
    let mut x2 = bench(QEMU_CAP, QEMU_ECAP | (1 << 4));
    x2.unit.program_fault_interrupt(0x41, 0x1_2345).unwrap();
    let hw = x2.hw.0.borrow();
    assert_eq!((hw.feaddr, hw.feuaddr), (0xFEE4_5000, 0x1_2300));
}

#[test]
fn rate_limiter_allows_burst_per_window() {
    let mut rl = RateLimiter::new(3, 100);
    let allowed: Vec<bool> = (0..5).map(|_| rl.allow(10)).collect();
    assert_eq!(allowed, vec![true, true, true, false, false]);
    assert_eq!(rl.take_suppressed(), 2);
    assert_eq!(rl.take_suppressed(), 0);
    assert!(rl.allow(115), "new window");
    assert_eq!(rl.suppressed_total(), 2);
}

#[test]
fn fault_storm_costs_counters_not_lines() {
    let mut b = qemu_enabled();
    let mut rl = RateLimiter::new(5, 1_000);
    let mut printed = 0;
    for i in 0..250u64 {
        b.hw.0.borrow_mut().inject_fault(0x10, i << 12, 6, true);
        b.unit.handle_faults(|_| {
            if rl.allow(i) {
                printed += 1;
            }
        });
    }
    assert_eq!(b.unit.fault_counters().records, 250);
    assert_eq!(printed, 5);
    assert_eq!(rl.suppressed_total(), 245);
}

#[test]
fn record_displays_as_one_log_line() {
    let hi = (1u64 << 63) | (0x05 << 32) | 0x0118;
    let r = FaultRecord::decode(0, 0x7000_0000, hi).unwrap();
    assert_eq!(
        r.to_string(),
        "DMA write fault from 01:03.0 at 0x70000000: reason 0x5 (write to a page without write permission (or not present))"
    );
}
