//! Interrupt remapping fields: every device id gets IV = 1 with a 2048-entry table of
//! aborting entries and no pass bit; platform sources keep firmware's pass bits; changes
//! are followed by INVALIDATE_DEVTAB_ENTRY and INVALIDATE_INTERRUPT_TABLE.

use crate::amdvi::interrupts::{InterruptTable, Irte, INT_CTL_REMAP, INT_TABLE_ENTRIES};
use crate::amdvi::{DecodedCommand, DeviceSetting, DteInterrupts};

use super::model::decoded_since;
use super::unit::{enabled, wait_stores};
use crate::amdvi::tests::model::QEMU_EFR;

#[test]
fn every_device_id_is_remapped_through_an_empty_table_and_nothing_passes() {
    let (mem, _state, unit) = enabled(QEMU_EFR, 0x00FF);
    let table = unit.empty_interrupt_table();
    assert_eq!(table % 128, 0, "IntTablePtr is 128-byte aligned");
    for devid in 0..unit.device_table_entries() as u16 {
        let e = unit.device_entry(devid).unwrap();
        let irq = e.interrupts();
        assert!(irq.valid(), "device {devid:#x}: IV = 0 lets its interrupts pass as written");
        assert_eq!(irq.int_ctl(), INT_CTL_REMAP, "device {devid:#x}");
        assert_eq!((irq.table(), irq.table_entries()), (table, INT_TABLE_ENTRIES));
        assert!(!irq.passes_anything(), "device {devid:#x}");
        assert!(e.reserved_bits_clear());
    }
    // The index is the data's bits 10:0: all 2048 entries exist and abort (RemapEn = 0).
    for index in 0..INT_TABLE_ENTRIES {
        let word = mem.read(table + ((index * 4) & !7));
        assert_eq!(word, 0, "entry {index} of the empty table");
    }
    assert_eq!(InterruptTable::FRAMES, 2);
}

#[test]
fn platform_sources_keep_firmwares_pass_bits_but_never_system_management() {
    let table = 0x20_0000;
    // INITPass, NMIPass, SysMgt = 01b, Lint1Pass.
    let setting = DeviceSetting(0b1001_0101);
    let q = DteInterrupts::platform_source(table, setting).unwrap();
    assert!(q.valid() && q.nmi_passes() && q.passes_anything());
    assert_eq!(q.0 & (3 << 40), 0, "SysMgt (DTE bits 169:168) never set");
    let endpoint = DteInterrupts::remapped(table).unwrap();
    assert!(!endpoint.passes_anything());
    assert_eq!(setting.words(), "INITPass, NMIPass, SysMgt, Lint1Pass");
    assert!(DteInterrupts::remapped(table + 64).is_err(), "IntTablePtr needs 128-byte alignment");
}

#[test]
fn interrupt_changes_invalidate_the_entry_and_its_interrupt_table() {
    let (_mem, state, mut unit) = enabled(QEMU_EFR, 0x00FF);
    unit.attach_device(0x20, 4, 0x1000, 4).unwrap();
    let start = state.borrow().commands.len();
    unit.set_interrupts(0x20, DteInterrupts::unmapped()).unwrap();
    let cmds = decoded_since(&state, start);
    assert_eq!(cmds[0], DecodedCommand::InvalidateDevtabEntry { device: 0x20 });
    assert_eq!(cmds[1], DecodedCommand::InvalidateInterruptTable { device: 0x20 });
    assert_eq!(wait_stores(&cmds), 1);
    let e = unit.device_entry(0x20).unwrap();
    assert!(!e.interrupts().valid() && e.is_translating(), "only quad 2 changed");
    unit.restore_interrupts(0x20).unwrap();
    assert!(unit.device_entry(0x20).unwrap().interrupts().valid());
    // Blocking DMA keeps the interrupt fields.
    unit.block_device(0x20).unwrap();
    assert!(unit.device_entry(0x20).unwrap().interrupts().valid());
}

#[test]
fn legacy_irte_layout() {
    let e = Irte::remapped(0x41, 3);
    assert_eq!(e.0, 1 | (3 << 8) | (0x41 << 16));
    assert!(e.enabled() && e.vector() == 0x41);
    assert!(!Irte::default().enabled());
}
