//! attach_device / block_device: entry contents, the order the quads are written in
//! (the hardware must never read a mixed entry), and the invalidations that follow.

use crate::amdvi::device_table::DTE_SIZE;
use crate::amdvi::regs;
use crate::amdvi::{DecodedCommand, DeviceTableEntry, DteInterrupts};
use crate::error::HwError;

use super::model::{decoded_since, TestMemory, QEMU_EFR};
use super::unit::{enabled, wait_stores};

#[test]
fn attach_writes_the_entry_then_invalidates_and_waits() {
    let (mem, state, mut unit) = enabled(QEMU_EFR, 0x00FF);
    let start = state.borrow().commands.len();
    unit.attach_device(0x0018, 3, 0x4000_0000, 4).unwrap();
    let e = unit.device_entry(0x0018).unwrap();
    let irq = DteInterrupts::remapped(unit.empty_interrupt_table()).unwrap();
    assert_eq!(e, DeviceTableEntry::translated(3, 0x4000_0000, 4).unwrap().with_interrupts(irq));
    assert!(e.reserved_bits_clear());
    assert_eq!(
        unit.device_entry(0x0017),
        Some(DeviceTableEntry::blocking().with_interrupts(irq)),
        "neighbours untouched"
    );
    let cmds = decoded_since(&state, start);
    assert_eq!(cmds[0], DecodedCommand::InvalidateDevtabEntry { device: 0x0018 });
    assert_eq!(
        cmds[1],
        DecodedCommand::InvalidateIommuPages { domain: 3, base: 0, order: 64, pde: true }
    );
    assert!(matches!(cmds[2], DecodedCommand::CompletionWait { store: true, .. }));
    assert_eq!(cmds.len(), 3);
    let table = state.borrow().regs[&regs::DEVICE_TABLE_BASE] & regs::BASE_ADDRESS_MASK;
    let entry = table + 0x18 * DTE_SIZE;
    assert!(mem.0.borrow().flushes.contains(&(entry, DTE_SIZE)));
}

/// Replays the CPU's writes to one entry and returns every state the hardware could read.
fn entry_states(mem: &TestMemory, entry: u64, from: usize, initial: [u64; 4]) -> Vec<[u64; 4]> {
    let mut quads = initial;
    let mut states = vec![quads];
    for &(addr, value) in &mem.0.borrow().writes[from..] {
        if (entry..entry + DTE_SIZE).contains(&addr) {
            quads[((addr - entry) / 8) as usize] = value;
            states.push(quads);
        }
    }
    states
}

#[test]
fn reattach_never_exposes_a_mixed_entry() {
    let (mem, state, mut unit) = enabled(QEMU_EFR, 0x00FF);
    unit.attach_device(0x0020, 1, 0x1000_0000, 4).unwrap();
    let old = unit.device_entry(0x0020).unwrap();
    let table = state.borrow().regs[&regs::DEVICE_TABLE_BASE] & regs::BASE_ADDRESS_MASK;
    let entry = table + 0x20 * DTE_SIZE;
    let writes_from = mem.0.borrow().writes.len();
    let start = state.borrow().commands.len();
    unit.attach_device(0x0020, 2, 0x2000_0000, 3).unwrap();
    let new = unit.device_entry(0x0020).unwrap();
    for quads in entry_states(&mem, entry, writes_from, old.quads()) {
        let seen = DeviceTableEntry::from_quads(quads);
        assert!(seen == old || seen == new || seen.is_blocking(), "hardware could read {quads:x?}");
    }
    let cmds = decoded_since(&state, start);
    let old_domain =
        DecodedCommand::InvalidateIommuPages { domain: 1, base: 0, order: 64, pde: true };
    let new_domain =
        DecodedCommand::InvalidateIommuPages { domain: 2, base: 0, order: 64, pde: true };
    assert!(cmds.contains(&old_domain) && cmds.contains(&new_domain), "{cmds:?}");
    let devtab = cmds
        .iter()
        .filter(|c| **c == DecodedCommand::InvalidateDevtabEntry { device: 0x20 })
        .count();
    assert_eq!(devtab, 2, "once for the blocking step, once for the new entry");
    assert_eq!(cmds.last().map(|c| matches!(c, DecodedCommand::CompletionWait { .. })), Some(true));
}

#[test]
fn block_restores_the_blocking_entry_and_forgets_the_domain() {
    let (mem, state, mut unit) = enabled(QEMU_EFR, 0x00FF);
    unit.attach_device(0x0008, 9, 0x3000_0000, 4).unwrap();
    let old = unit.device_entry(0x0008).unwrap();
    let table = state.borrow().regs[&regs::DEVICE_TABLE_BASE] & regs::BASE_ADDRESS_MASK;
    let writes_from = mem.0.borrow().writes.len();
    let start = state.borrow().commands.len();
    unit.block_device(0x0008).unwrap();
    let irq = DteInterrupts::remapped(unit.empty_interrupt_table()).unwrap();
    assert_eq!(
        unit.device_entry(0x0008),
        Some(DeviceTableEntry::blocking().with_interrupts(irq)),
        "DMA blocked, interrupt fields kept"
    );
    let states = entry_states(&mem, table + 8 * DTE_SIZE, writes_from, old.quads());
    assert!(DeviceTableEntry::from_quads(states[1]).is_blocking(), "quad 0 goes first");
    let cmds = decoded_since(&state, start);
    assert_eq!(cmds[0], DecodedCommand::InvalidateDevtabEntry { device: 8 });
    assert_eq!(
        cmds[1],
        DecodedCommand::InvalidateIommuPages { domain: 9, base: 0, order: 64, pde: true }
    );
    assert_eq!(wait_stores(&cmds), 1);
}

#[test]
fn attach_refuses_what_the_unit_cannot_do() {
    let (_mem, _state, mut unit) = enabled(0, 0x007F);
    assert!(
        matches!(unit.attach_device(1, 1, 0x1000, 5), Err(HwError::Unsupported { .. })),
        "HATS=0: 4 levels"
    );
    assert!(unit.attach_device(0x0080, 1, 0x1000, 4).is_err(), "beyond the table");
    assert!(unit.block_device(0x0080).is_err());
    assert!(unit.attach_device(1, 1, 0x1234, 4).is_err(), "unaligned root");
    let irq = DteInterrupts::remapped(unit.empty_interrupt_table()).unwrap();
    assert_eq!(unit.device_entry(1), Some(DeviceTableEntry::blocking().with_interrupts(irq)));
}

/// Firmware-reserved identity domains go in before enable: the entry is written with no
/// command (the buffer does not run yet), the invalidator's operations succeed without
/// one, and enable keeps the entry and flushes every cache before translation.
#[test]
fn attach_before_enable_writes_the_entry_and_enable_flushes_it() {
    use crate::amdvi::AmdViUnit;
    use crate::invalidate::{IotlbInvalidator, IovaBlock};
    let (mem, model) = super::model::setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem, 0x00FF).unwrap();
    unit.attach_device(0x00A0, 7, 0x4000_0000, 4).unwrap();
    unit.invalidate_block(7, IovaBlock { iova: 0xE_0000, order: 12 }).unwrap();
    IotlbInvalidator::sync(&mut unit).unwrap();
    assert!(state.borrow().commands.is_empty(), "no command before enable");
    // The inherent completion wait still refuses to run on a stopped unit.
    assert!(matches!(unit.completion_wait(), Err(HwError::Unsupported { .. })));
    unit.enable().unwrap();
    let e = unit.device_entry(0x00A0).unwrap();
    assert_eq!((e.domain(), e.root()), (7, 0x4000_0000), "the entry survives enable");
    let cmds = decoded_since(&state, 0);
    assert!(cmds.contains(&DecodedCommand::InvalidateIommuAll), "{cmds:?}");
    let control = state.borrow().control_writes.clone();
    assert!(control.iter().any(|c| c & 1 != 0), "translation on");
}
