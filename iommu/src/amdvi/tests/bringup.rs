//! Bring-up against register models of what real units do and QEMU does not show: a
//! Control register full of firmware's bits, a run bit that lags CmdBufEn, a command
//! buffer the unit stopped, an IA-less unit with stale IOTLB entries, and an enable that
//! fails and leaves the unit disabled.

use crate::amdvi::regs::{self, Control};
use crate::amdvi::{initial_control, AmdViUnit, DecodedCommand};
use crate::error::HwError;
use crate::invalidate::{IotlbInvalidator, IovaBlock};

use super::model::{decoded_since, setup, QEMU_EFR};
use super::unit::enabled;

/// QEMU's EFR without IA (no INVALIDATE_IOMMU_ALL).
const EFR_WITHOUT_IA: u64 = QEMU_EFR & !(1 << 6);

#[test]
fn control_is_built_from_zero_not_inherited() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    // Firmware left every bit it could set: segmentation, GA log, PPR, guest translation,
    // x2APIC modes, its own invalidation time-out.
    state.borrow_mut().regs.insert(regs::CONTROL, u64::MAX);
    let mut unit = AmdViUnit::new(model, mem, 0x00FF).unwrap();
    unit.set_ivhd_flags(0b0000_0101); // HtTunEn, ResPassPW
    unit.enable().unwrap();
    let writes = state.borrow().control_writes.clone();
    assert_eq!(writes[0], 0, "everything off first");
    let last = Control::from_bits_retain(*writes.last().unwrap());
    let expected = Control::HT_TUN_EN
        | Control::RES_PASS_PW
        | Control::COHERENT
        | Control::from_bits_retain(4 << 5) // InvTimeOut 1 s
        | Control::CMD_BUF_EN
        | Control::EVENT_LOG_EN
        | Control::IOMMU_EN;
    assert_eq!(last, expected, "{last:?}");
    assert_eq!(initial_control(0), Control::COHERENT | Control::from_bits_retain(4 << 5));
    assert_eq!(
        initial_control(0x0F),
        Control::COHERENT
            | Control::from_bits_retain(4 << 5)
            | Control::HT_TUN_EN
            | Control::PASS_PW
            | Control::RES_PASS_PW
            | Control::ISOC
    );
}

#[test]
fn a_run_bit_that_lags_its_enable_bit_is_waited_for() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    state.borrow_mut().run_lag = 200;
    let mut unit = AmdViUnit::new(model, mem, 0x00FF).unwrap();
    unit.enable().expect("a late CMD_BUF_RUN is not a stopped buffer");
    assert!(unit.is_enabled());
    // And mid-operation a few clear reads do not make the buffer stopped either.
    state.borrow_mut().run_lag = 10;
    unit.restart_command_buffer().unwrap();
    unit.invalidate_block(1, IovaBlock { iova: 0, order: 12 }).unwrap();
    unit.completion_wait().unwrap();
}

#[test]
fn an_enable_that_fails_leaves_the_unit_disabled_on_purpose() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    state.borrow_mut().run_lag = u32::MAX; // the command buffer never starts
    let mut unit = AmdViUnit::new(model, mem, 0x00FF).unwrap();
    assert_eq!(
        unit.enable(),
        Err(HwError::Timeout { what: "Status.CMD_BUF_RUN set (command buffer started)" })
    );
    assert!(!unit.is_enabled());
    let last = Control::from_bits_retain(*state.borrow().control_writes.last().unwrap());
    assert!(!last.intersects(Control::IOMMU_EN | Control::CMD_BUF_EN), "{last:?}");
}

#[test]
fn a_stopped_command_buffer_is_reset_and_restarted() {
    let (_mem, state, mut unit) = enabled(QEMU_EFR, 0x00FF);
    state.borrow_mut().command_buffer_stopped = true;
    unit.invalidate_block(1, IovaBlock { iova: 0, order: 12 }).unwrap();
    let stopped = HwError::QueueError { what: "command buffer stopped" };
    assert_eq!(unit.completion_wait(), Err(stopped), "the lost commands are reported");
    assert_eq!(unit.stats().command_buffer_restarts, 1);
    assert_eq!(state.borrow().regs[&regs::COMMAND_HEAD], 0);
    // The unit takes commands again.
    let before = state.borrow().commands.len();
    unit.invalidate_block(2, IovaBlock { iova: 0x1000, order: 12 }).unwrap();
    unit.completion_wait().unwrap();
    let cmds = decoded_since(&state, before);
    assert!(cmds
        .iter()
        .any(|c| matches!(c, DecodedCommand::InvalidateIommuPages { domain: 2, .. })));
}

#[test]
fn an_ia_less_unit_drops_a_reused_domain_id_before_the_entry_goes_live() {
    let (_mem, state, mut unit) = enabled(EFR_WITHOUT_IA, 0x00FF);
    let start = state.borrow().commands.len();
    unit.attach_device(0x0010, 7, 0x4000_0000, 4).unwrap();
    let cmds = decoded_since(&state, start);
    let all = DecodedCommand::InvalidateIommuPages { domain: 7, base: 0, order: 64, pde: true };
    // INVALIDATE_IOMMU_PAGES(7) and a completed wait, then the entry (its
    // INVALIDATE_DEVTAB_ENTRY comes only after it was written).
    assert_eq!(cmds[0], all, "{cmds:?}");
    assert!(matches!(cmds[1], DecodedCommand::CompletionWait { store: true, .. }));
    assert_eq!(cmds[2], DecodedCommand::InvalidateDevtabEntry { device: 0x0010 });
    // A second device on the same id: no second pre-flush.
    let start = state.borrow().commands.len();
    unit.attach_device(0x0018, 7, 0x4000_0000, 4).unwrap();
    assert_eq!(
        decoded_since(&state, start)[0],
        DecodedCommand::InvalidateDevtabEntry { device: 0x0018 }
    );

    // With IA the enable's INVALIDATE_IOMMU_ALL covered every id: no pre-flush.
    let (_mem, state, mut unit) = enabled(QEMU_EFR, 0x00FF);
    let start = state.borrow().commands.len();
    unit.attach_device(0x0010, 7, 0x4000_0000, 4).unwrap();
    assert_eq!(
        decoded_since(&state, start)[0],
        DecodedCommand::InvalidateDevtabEntry { device: 0x0010 }
    );
}
