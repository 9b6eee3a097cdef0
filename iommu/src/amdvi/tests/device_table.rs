//! Device table entry layout and table sizing.

use crate::amdvi::device_table::{DeviceTable, DeviceTableEntry, DTE_SIZE};
use crate::error::HwError;
use crate::platform::PAGE_SIZE;

use super::model::TestMemory;

#[test]
fn blocking_entry_is_valid_translation_valid_mode_zero_no_access() {
    let e = DeviceTableEntry::blocking();
    assert_eq!(e.quads(), [0b11, 0, 0, 0]);
    assert!(e.is_blocking() && !e.is_translating() && e.reserved_bits_clear());
}

#[test]
fn translated_entry_bit_layout() {
    for levels in 1..=6u32 {
        let root = 0x000F_EDCB_A987_6000;
        let e = DeviceTableEntry::translated(0xABCD, root, levels).unwrap();
        let expected_q0 = 1 | 1 << 1 | u64::from(levels) << 9 | root | 1 << 61 | 1 << 62;
        assert_eq!(e.quads(), [expected_q0, 0xABCD, 0, 0], "levels {levels}");
        assert!(e.reserved_bits_clear());
        assert!(e.valid() && e.translation_valid() && e.read_allowed() && e.write_allowed());
        assert_eq!((e.mode(), e.root(), e.domain()), (levels, root, 0xABCD));
        assert!(e.is_translating() && !e.is_blocking());
    }
}

#[test]
fn reserved_bit_detection_notices_stray_bits() {
    let good = DeviceTableEntry::translated(1, 0x1000, 4).unwrap().quads();
    for (quad, bit) in [(0, 2), (0, 8), (0, 52), (0, 63), (1, 16), (2, 52), (2, 59), (3, 5)] {
        let mut q = good;
        q[quad] |= 1 << bit;
        assert!(!DeviceTableEntry::from_quads(q).reserved_bits_clear(), "quad {quad} bit {bit}");
    }
}

#[test]
fn translated_entry_rejects_bad_levels_and_roots() {
    for levels in [0, 7, 8] {
        assert!(matches!(
            DeviceTableEntry::translated(1, 0x1000, levels),
            Err(HwError::Unsupported { .. })
        ));
    }
    for root in [0x1001, 0x10_0000_0000_0000, !0xFFF] {
        assert!(DeviceTableEntry::translated(1, root, 4).is_err(), "root {root:#x}");
    }
}

#[test]
fn table_is_sized_from_the_highest_device_id_in_whole_frames() {
    for (max, frames) in
        [(0u16, 1u64), (127, 1), (128, 2), (0x00FF, 2), (0x0FFF, 32), (0xFFFF, 512)]
    {
        let mut mem = TestMemory::new();
        let table = DeviceTable::allocate(&mut mem, max).unwrap();
        assert_eq!(table.entries(), frames * 128, "max devid {max:#x}");
        assert_eq!(table.base_register_value(), table.base() | (frames - 1));
        assert!(table.entry_address(max).is_some());
        if table.entries() <= 0xFFFF {
            assert!(table.entry_address(table.entries() as u16).is_none());
        }
        assert_eq!(mem.0.borrow().allocated as u64, frames, "no frame kept beyond the table");
    }
}

#[test]
fn every_entry_starts_blocking_and_is_flushed() {
    let mut mem = TestMemory::new();
    let table = DeviceTable::allocate(&mut mem, 0x01FF).unwrap();
    for devid in 0..table.entries() as u16 {
        assert_eq!(table.read(&mem, devid), Some(DeviceTableEntry::blocking()), "devid {devid}");
    }
    let flushed = mem.0.borrow().flushes.clone();
    assert!(flushed.contains(&(table.base(), table.entries() * DTE_SIZE)));
}

#[test]
fn descending_frames_form_a_table_too() {
    let mut mem = TestMemory::with_stride(0x80_0000, -(PAGE_SIZE as i64));
    let table = DeviceTable::allocate(&mut mem, 0x03FF).unwrap();
    assert_eq!(table.entries(), 1024);
    assert_eq!(table.base(), 0x80_0000 - 7 * PAGE_SIZE);
}

#[test]
fn scattered_frames_fail_cleanly_and_are_all_given_back() {
    let mut mem = TestMemory::with_stride(0x10_0000, 2 * PAGE_SIZE as i64);
    let result = DeviceTable::allocate(&mut mem, 0x00FF);
    assert_eq!(result.err(), Some(HwError::OutOfMemory));
    assert_eq!(mem.0.borrow().allocated, 0);
}

#[test]
fn out_of_frames_is_out_of_memory() {
    let mut mem = TestMemory::new();
    mem.0.borrow_mut().frames_left = Some(3);
    assert_eq!(DeviceTable::allocate(&mut mem, 0x03FF).err(), Some(HwError::OutOfMemory));
    assert_eq!(mem.0.borrow().allocated, 0);
}
