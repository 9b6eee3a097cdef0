//! Event record decoding from hand-built entries (the specification's layout), and the
//! log's head/tail/overflow handling against the model.

use crate::amdvi::event_log::{EventLog, EVENT_SIZE};
use crate::amdvi::regs::{self, Control, Status};
use crate::amdvi::{AmdViUnit, Event, EventFlags};

use super::model::{setup, AmdViModel, TestMemory, QEMU_EFR};

/// An event record per the specification: DeviceID 15:0, PASID 19:16, tag (DomainID or
/// PASID 15:0) 47:32, flags 59:48, code 63:60; the address is the second quadword.
fn record(code: u8, device: u16, tag: u16, pasid_high: u8, flags: u16, address: u64) -> [u64; 2] {
    let q0 = u64::from(device)
        | u64::from(pasid_high & 0xF) << 16
        | u64::from(tag) << 32
        | u64::from(flags & 0xFFF) << 48
        | u64::from(code) << 60;
    [q0, address]
}

const RW: u16 = 1 << 5;
const PR: u16 = 1 << 4;
const PE: u16 = 1 << 6;
const GN: u16 = 1 << 0;
const I: u16 = 1 << 3;

#[test]
fn io_page_fault_with_domain() {
    let e = Event::decode(record(2, 0x0018, 5, 0, RW | PR | PE, 0xDEAD_B000));
    assert_eq!(
        e,
        Event::IoPageFault {
            device: 0x0018,
            domain: Some(5),
            pasid: None,
            address: 0xDEAD_B000,
            flags: EventFlags(RW | PR | PE)
        }
    );
    let text = e.to_string();
    for word in [
        "IO_PAGE_FAULT",
        "00:03.0",
        "domain 5",
        "0xdeadb000",
        "write",
        "present",
        "permission denied",
    ] {
        assert!(text.contains(word), "{text:?} lacks {word:?}");
    }
}

#[test]
fn io_page_fault_with_pasid() {
    let e = Event::decode(record(2, 0x0100, 0x2345, 0x1, GN | I, 0x4000));
    assert_eq!(
        e,
        Event::IoPageFault {
            device: 0x0100,
            domain: None,
            pasid: Some(0x1_2345),
            address: 0x4000,
            flags: EventFlags(GN | I)
        }
    );
    let text = e.to_string();
    assert!(
        text.contains("01:00.0")
            && text.contains("pasid 0x12345")
            && text.contains("read, interrupt"),
        "{text}"
    );
}

#[test]
fn every_code_decodes_to_its_kind() {
    let hw = 2 << 9; // target abort
    let cases: [(u8, Event, &str); 8] = [
        (
            1,
            Event::IllegalDevTableEntry { device: 0x10, address: 0x7000, flags: EventFlags(RW) },
            "ILLEGAL_DEV_TABLE_ENTRY",
        ),
        (
            3,
            Event::DevTabHardwareError { device: 0x10, address: 0x7000, flags: EventFlags(hw) },
            "target abort",
        ),
        (
            4,
            Event::PageTabHardwareError {
                device: 0x10,
                domain: 9,
                address: 0x7000,
                flags: EventFlags(hw),
            },
            "PAGE_TAB_HARDWARE_ERROR",
        ),
        (5, Event::IllegalCommand { address: 0x7000 }, "ILLEGAL_COMMAND_ERROR"),
        (
            6,
            Event::CommandHardwareError { address: 0x7000, flags: EventFlags(hw) },
            "COMMAND_HARDWARE_ERROR",
        ),
        (7, Event::IotlbInvTimeout { device: 0x10, address: 0x7000 }, "IOTLB_INV_TIMEOUT"),
        (
            8,
            Event::InvalidDeviceRequest { device: 0x10, address: 0x7000, flags: EventFlags(RW) },
            "INVALID_DEVICE_REQUEST",
        ),
        (
            9,
            Event::InvalidPprRequest { device: 0x10, address: 0x7000, flags: EventFlags(RW) },
            "INVALID_PPR_REQUEST",
        ),
    ];
    for (code, expected, word) in cases {
        let flags = match expected {
            Event::DevTabHardwareError { flags, .. }
            | Event::PageTabHardwareError { flags, .. }
            | Event::CommandHardwareError { flags, .. }
            | Event::IllegalDevTableEntry { flags, .. }
            | Event::InvalidDeviceRequest { flags, .. }
            | Event::InvalidPprRequest { flags, .. } => flags.0,
            _ => 0,
        };
        let decoded = Event::decode(record(code, 0x10, 9, 0, flags, 0x7000));
        assert_eq!(decoded, expected, "code {code}");
        assert_eq!(decoded.code(), code);
        assert!(decoded.to_string().contains(word), "{decoded}");
    }
    let raw = record(0xC, 1, 2, 0, 0, 3);
    assert_eq!(Event::decode(raw), Event::Other { code: 0xC, raw });
}

fn enabled_unit() -> (
    TestMemory,
    std::rc::Rc<std::cell::RefCell<super::model::ModelState>>,
    AmdViUnit<AmdViModel, TestMemory>,
) {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem.clone(), 0x00FF).unwrap();
    unit.enable().unwrap();
    (mem, state, unit)
}

/// Plays the IOMMU: writes `records` at the model's tail and advances the tail register.
fn log_events(
    mem: &TestMemory,
    state: &std::rc::Rc<std::cell::RefCell<super::model::ModelState>>,
    records: &[[u64; 2]],
) {
    let mut s = state.borrow_mut();
    let base = s.regs[&regs::EVENT_LOG_BASE] & regs::BASE_ADDRESS_MASK;
    let mut tail = s.regs.get(&regs::EVENT_TAIL).copied().unwrap_or(0);
    for r in records {
        mem.device_write(base + tail, r[0]);
        mem.device_write(base + tail + 8, r[1]);
        tail = (tail + EVENT_SIZE) % EventLog::LEN;
    }
    s.regs.insert(regs::EVENT_TAIL, tail);
}

#[test]
fn no_events_means_nothing_drained_and_no_head_write() {
    let (_mem, state, mut unit) = enabled_unit();
    let before = state.borrow().accesses.len();
    assert!(unit.drain_events().is_empty());
    let writes =
        state.borrow().accesses[before..].iter().filter(|a| a.0 == regs::EVENT_HEAD).count();
    assert_eq!(writes, 0);
    assert_eq!(*unit.event_counters(), Default::default());
}

#[test]
fn drain_reads_head_to_tail_zeroes_records_and_moves_the_head() {
    let (mem, state, mut unit) = enabled_unit();
    let records: Vec<[u64; 2]> =
        (0..3).map(|i| record(2, 0x18, 1, 0, RW, 0x1000 * (i + 1))).collect();
    log_events(&mem, &state, &records);
    let events = unit.drain_events();
    assert_eq!(events.len(), 3);
    assert_eq!(events[2], Event::decode(records[2]));
    assert_eq!(state.borrow().regs[&regs::EVENT_HEAD], 3 * EVENT_SIZE);
    let base = state.borrow().regs[&regs::EVENT_LOG_BASE] & regs::BASE_ADDRESS_MASK;
    assert_eq!((mem.read(base), mem.read(base + 8)), (0, 0), "consumed records are zeroed");
    assert_eq!(unit.event_counters().by_code[2], 3);
    assert!(unit.drain_events().is_empty(), "nothing read twice");
}

#[test]
fn drain_follows_the_ring_across_the_wrap() {
    let (mem, state, mut unit) = enabled_unit();
    let slots = EventLog::LEN / EVENT_SIZE;
    let mut seen = 0u64;
    for round in 0..3u64 {
        let batch: Vec<[u64; 2]> =
            (0..200u64).map(|i| record(7, 0x20, 0, 0, 0, round * 1000 + i)).collect();
        log_events(&mem, &state, &batch);
        let events = unit.drain_events();
        assert_eq!(events.len(), 200);
        assert_eq!(
            events[199],
            Event::IotlbInvTimeout { device: 0x20, address: round * 1000 + 199 }
        );
        seen += 200;
    }
    assert_eq!(state.borrow().regs[&regs::EVENT_HEAD], (seen % slots) * EVENT_SIZE);
    assert_eq!(unit.event_counters().total, seen);
}

#[test]
fn overflow_is_counted_and_logging_restarted() {
    let (mem, state, mut unit) = enabled_unit();
    log_events(&mem, &state, &[record(5, 0, 0, 0, 0, 0x9000)]);
    state
        .borrow_mut()
        .regs
        .insert(regs::STATUS, Status::EVENT_OVERFLOW.bits() | Status::EVENT_LOG_RUN.bits());
    let writes_before = state.borrow().control_writes.len();
    let events = unit.drain_events();
    assert_eq!(events, vec![Event::IllegalCommand { address: 0x9000 }]);
    assert_eq!(unit.event_counters().overflows, 1);
    let s = state.borrow();
    assert_eq!(s.regs[&regs::STATUS] & Status::EVENT_OVERFLOW.bits(), 0, "overflow cleared (W1C)");
    let writes = &s.control_writes[writes_before..];
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0] & Control::EVENT_LOG_EN.bits(), 0, "log stopped");
    assert_ne!(writes[1] & Control::EVENT_LOG_EN.bits(), 0, "log restarted");
    assert_ne!(writes[1] & Control::IOMMU_EN.bits(), 0, "translation untouched");
}

#[test]
fn bogus_tail_and_unwritten_records_are_counted_not_trusted() {
    let (mem, state, mut unit) = enabled_unit();
    state.borrow_mut().regs.insert(regs::EVENT_TAIL, EventLog::LEN);
    assert!(unit.drain_events().is_empty());
    assert_eq!(unit.event_counters().bad_tail, 1);
    state.borrow_mut().regs.insert(regs::EVENT_TAIL, 0);
    // Tail moved by one record whose data never landed.
    log_events(&mem, &state, &[[0, 0]]);
    assert!(unit.drain_events().is_empty());
    assert_eq!(unit.event_counters().unwritten, 1);
    assert_eq!(state.borrow().regs[&regs::EVENT_HEAD], EVENT_SIZE);
}

#[test]
fn the_event_interrupt_is_enabled_on_request_and_its_status_cleared_by_the_drain() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem.clone(), 0x00FF).unwrap();
    unit.set_event_interrupt(true);
    unit.enable().unwrap();
    let control = Control::from_bits_retain(state.borrow().regs[&regs::CONTROL]);
    assert!(control.contains(Control::EVENT_INT_EN | Control::EVENT_LOG_EN | Control::IOMMU_EN));
    log_events(&mem, &state, &[record(2, 0x18, 1, 0, RW, 0x1000)]);
    state.borrow_mut().regs.insert(regs::STATUS, Status::EVENT_LOG_INT.bits());
    assert_eq!(unit.drain_events().len(), 1);
    let status = state.borrow().regs[&regs::STATUS];
    assert_eq!(status & Status::EVENT_LOG_INT.bits(), 0, "EventLogInt cleared after the drain");
    // Off again at once on the running unit.
    unit.set_event_interrupt(false);
    let control = Control::from_bits_retain(state.borrow().regs[&regs::CONTROL]);
    assert!(!control.contains(Control::EVENT_INT_EN));
    assert!(control.contains(Control::IOMMU_EN));
}

#[test]
fn a_completion_interrupt_is_raised_once_and_com_wait_int_en_dropped_after() {
    let (_mem, state, mut unit) = enabled_unit();
    let before = state.borrow().commands.len();
    unit.raise_completion_interrupt().unwrap();
    let s = state.borrow();
    let cmd = s.commands[before].quads()[0];
    assert_eq!(cmd >> 60, 1, "a COMPLETION_WAIT");
    assert_eq!(cmd & 0b11, 0b11, "store and interrupt bits");
    let writes = &s.control_writes;
    let with_int = writes.iter().rposition(|w| w & Control::COM_WAIT_INT_EN.bits() != 0);
    assert_eq!(with_int, Some(writes.len() - 2), "on for the command only");
    assert_eq!(writes.last().unwrap() & Control::COM_WAIT_INT_EN.bits(), 0);
}
