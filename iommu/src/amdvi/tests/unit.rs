//! The unit driver against the model: EFR decode, enable sequence, completion wait,
//! attach/block with their invalidations and write order, and the core's flush trait.

use std::cell::RefCell;
use std::rc::Rc;

use crate::amdvi::regs::{self, Control};
use crate::amdvi::{AmdViUnit, DecodedCommand};
use crate::error::HwError;
use crate::invalidate::{IotlbInvalidator, IovaBlock};

use super::model::{decoded_since, setup, AmdViModel, ModelState, TestMemory, QEMU_EFR};

type Unit = AmdViUnit<AmdViModel, TestMemory>;

pub(super) fn enabled(efr: u64, max_devid: u16) -> (TestMemory, Rc<RefCell<ModelState>>, Unit) {
    let (mem, model) = setup(efr);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem.clone(), max_devid).unwrap();
    unit.enable().unwrap();
    (mem, state, unit)
}

pub(super) fn wait_stores(cmds: &[DecodedCommand]) -> usize {
    cmds.iter().filter(|c| matches!(c, DecodedCommand::CompletionWait { store: true, .. })).count()
}

#[test]
fn qemu_efr_in_words_and_levels() {
    let (mem, model) = setup(QEMU_EFR);
    let unit = AmdViUnit::new(model, mem, 0xFF).unwrap();
    assert_eq!((unit.max_levels(), unit.levels()), (6, 4));
    let text = unit.describe().join("\n");
    for word in [
        "PreF",
        "PPR",
        "GT",
        "IA",
        "GA",
        "HE",
        "HATS=2 (6-level",
        "GATS=2",
        "256 entries",
        "not enabled",
    ] {
        assert!(text.contains(word), "{text} lacks {word}");
    }
    assert!(!text.contains("PC (") && !text.contains("NX"), "{text}");
    // The page sizes come from the format alone: every power of two 4K..256G.
    let format = crate::unit::RemappingUnit::domain_format(&unit).unwrap();
    let sizes = crate::pgtable::PteFormat::page_sizes(&format);
    assert_eq!(sizes, crate::pgtable::size_range(12, 38));
}

#[test]
fn reserved_hats_is_refused_and_four_levels_minimum() {
    let (mem, model) = setup(0b11 << 10);
    assert!(matches!(AmdViUnit::new(model, mem, 0), Err(HwError::Unsupported { .. })));
    let (mem, model) = setup(0);
    let unit = AmdViUnit::new(model, mem, 0).unwrap();
    assert_eq!((unit.max_levels(), unit.levels()), (4, 4));
}

#[test]
fn enable_programs_bases_and_control_and_flushes_all() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    // Firmware left coherency on and the GA (128-bit IRTE) mode on.
    let firmware = (Control::COHERENT | Control::GA_EN).bits();
    state.borrow_mut().regs.insert(regs::CONTROL, firmware);
    let mut unit = AmdViUnit::new(model, mem, 0x00FF).unwrap();
    unit.enable().unwrap();
    let s = state.borrow();
    let devtab = s.regs[&regs::DEVICE_TABLE_BASE];
    assert_eq!(devtab & 0x1FF, 1, "two frames: size field 1");
    assert_eq!(s.regs[&regs::COMMAND_BUFFER_BASE] >> 56, 8, "ComLen 256 entries");
    assert_eq!(s.regs[&regs::EVENT_LOG_BASE] >> 56, 8, "EventLen 256 entries");
    let control = Control::from_bits_retain(s.regs[&regs::CONTROL]);
    assert!(control.contains(
        Control::IOMMU_EN | Control::CMD_BUF_EN | Control::EVENT_LOG_EN | Control::COHERENT
    ));
    assert!(!control.contains(Control::GA_EN));
    assert_eq!(s.control_writes[0] & Control::IOMMU_EN.bits(), 0, "disabled while programming");
    let last = s.control_writes.last().unwrap();
    assert_eq!(
        s.control_writes[s.control_writes.len() - 2] | Control::IOMMU_EN.bits(),
        *last,
        "IOMMUEn last"
    );
    for base in [regs::DEVICE_TABLE_BASE, regs::COMMAND_BUFFER_BASE, regs::EVENT_LOG_BASE] {
        assert!(s.accesses.contains(&(base, 8)), "8-byte write to {base:#x}");
    }
    drop(s);
    let cmds = decoded_since(&state, 0);
    assert_eq!(cmds[0], DecodedCommand::InvalidateIommuAll);
    assert_eq!(cmds.len(), 2);
    assert_eq!(wait_stores(&cmds), 1);
    assert!(unit.describe().join("\n").contains("enabled; control"));
}

#[test]
fn without_ia_boot_flush_covers_every_entry_and_no_unused_domain() {
    let efr = QEMU_EFR & !(1 << 6);
    let (_mem, state, _unit) = enabled(efr, 0x007F);
    let cmds = decoded_since(&state, 0);
    let devtab =
        cmds.iter().filter(|c| matches!(c, DecodedCommand::InvalidateDevtabEntry { .. })).count();
    let domains = cmds
        .iter()
        .filter(|c| matches!(c, DecodedCommand::InvalidateIommuPages { order: 64, .. }))
        .count();
    // A fresh device table names no domain: 65 536 domain flushes were pure waste.
    assert_eq!((devtab, domains), (128, 0));
    assert_eq!(wait_stores(&cmds), 1);
    assert!(!cmds.contains(&DecodedCommand::InvalidateIommuAll));
}

#[test]
fn completion_wait_stores_fresh_sequence_numbers() {
    let (_mem, state, mut unit) = enabled(QEMU_EFR, 0);
    let start = state.borrow().commands.len();
    unit.completion_wait().unwrap();
    unit.completion_wait().unwrap();
    let cmds = decoded_since(&state, start);
    let data: Vec<u64> = cmds
        .iter()
        .map(|c| match c {
            DecodedCommand::CompletionWait { store: true, data, .. } => *data,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(data.len(), 2);
    assert_ne!(data[0], data[1]);
}

#[test]
fn completion_wait_times_out_when_the_store_never_comes() {
    let (_mem, state, mut unit) = enabled(QEMU_EFR, 0);
    state.borrow_mut().store_completions = false;
    assert!(matches!(unit.completion_wait(), Err(HwError::Timeout { .. })));
    state.borrow_mut().store_completions = true;
    unit.completion_wait().expect("a later wait does not mistake the old number");
}

#[test]
fn commands_before_enable_are_refused() {
    let (mem, model) = setup(QEMU_EFR);
    let mut unit = AmdViUnit::new(model, mem, 0).unwrap();
    assert!(matches!(unit.completion_wait(), Err(HwError::Unsupported { .. })));
}

#[test]
fn iotlb_invalidator_encodes_blocks_and_syncs() {
    let (_mem, state, mut unit) = enabled(QEMU_EFR, 0);
    assert_eq!(unit.max_block_order(), 63);
    let start = state.borrow().commands.len();
    unit.invalidate_block(4, IovaBlock { iova: 0x7000, order: 12 }).unwrap();
    unit.invalidate_block(4, IovaBlock { iova: 0x4000_0000, order: 30 }).unwrap();
    unit.invalidate_block(4, IovaBlock { iova: 0x3000, order: 13 }).unwrap(); // misaligned
    unit.invalidate_domain(4).unwrap();
    unit.sync().unwrap();
    let cmds = decoded_since(&state, start);
    let pages =
        |base, order| DecodedCommand::InvalidateIommuPages { domain: 4, base, order, pde: true };
    assert_eq!(cmds[..4], [pages(0x7000, 12), pages(0x4000_0000, 30), pages(0, 15), pages(0, 64)]);
    assert!(matches!(cmds[4], DecodedCommand::CompletionWait { store: true, .. }));
    let stats = unit.stats();
    assert_eq!((stats.page_invalidations, stats.domain_invalidations), (3, 1));
}

#[test]
fn invalidate_all_without_ia_covers_every_entry_and_each_domain_in_use() {
    let efr = QEMU_EFR & !(1 << 6);
    let (_mem, state, mut unit) = enabled(efr, 0x00FF);
    unit.attach_device(0x10, 7, 0x1000, 4).unwrap();
    unit.attach_device(0x11, 7, 0x1000, 4).unwrap();
    unit.attach_device(0x12, 8, 0x2000, 4).unwrap();
    unit.attach_device(0x13, 9, 0x3000, 4).unwrap();
    unit.block_device(0x13).unwrap();
    let start = state.borrow().commands.len();
    unit.invalidate_all().unwrap();
    let cmds = decoded_since(&state, start);
    let devtab: Vec<u16> = cmds
        .iter()
        .filter_map(|c| match c {
            DecodedCommand::InvalidateDevtabEntry { device } => Some(*device),
            _ => None,
        })
        .collect();
    assert_eq!(devtab, (0..=0xFF).collect::<Vec<u16>>(), "every device table entry");
    let pages =
        |domain| DecodedCommand::InvalidateIommuPages { domain, base: 0, order: 64, pde: true };
    // 9 was attached since the last full flush, then blocked.
    // Each entry's interrupt table too, right after the entry.
    let tables = cmds
        .iter()
        .filter(|c| matches!(c, DecodedCommand::InvalidateInterruptTable { .. }))
        .count();
    assert_eq!(tables, 256, "every device's interrupt table");
    assert_eq!(cmds[512..515], [pages(7), pages(8), pages(9)]);
    assert_eq!(cmds.len(), 516);
    assert_eq!(wait_stores(&cmds[515..]), 1);
    // The next full flush covers only what the table still names.
    let start = state.borrow().commands.len();
    unit.invalidate_all().unwrap();
    let cmds = decoded_since(&state, start);
    assert_eq!(cmds[512..514], [pages(7), pages(8)]);
    assert_eq!(cmds.len(), 515);
}

#[test]
fn keeps_working_when_no_event_ever_comes() {
    let (_mem, _state, mut unit) = enabled(QEMU_EFR, 0x00FF);
    for round in 0..50u16 {
        unit.attach_device(round, round, 0x1000 * u64::from(round + 1), 4).unwrap();
        assert!(unit.drain_events().is_empty());
        unit.block_device(round).unwrap();
    }
    assert_eq!(unit.event_counters().total, 0);
    assert!(unit.stats().completion_waits >= 100);
}
