//! Command encodings against the specification's rules, and the ring's wrap and fill.

use crate::amdvi::command::{
    covering_block, decode_pages_range, encode_pages_range, Command, CommandBuffer,
    ALL_PAGES_ADDRESS, COMMAND_SIZE,
};
use crate::amdvi::{AmdViUnit, DecodedCommand};
use crate::error::HwError;
use crate::invalidate::{IotlbInvalidator, IovaBlock};

use super::model::{decoded_since, setup, QEMU_EFR};

/// A deterministic stream of 64-bit values (xorshift), so base addresses vary per order.
fn pseudo_random(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(x)
    })
}

/// Whether `iova` is invalidated by an INVALIDATE_IOMMU_PAGES with this address and S,
/// read straight from the specification: without S, the one page; with S, every address
/// that agrees with the command's address above its lowest clear bit (bit 12 and up).
fn spec_covers(address: u64, s: bool, iova: u64) -> bool {
    if !s {
        return iova >> 12 == address >> 12;
    }
    let mut bit = 12;
    while bit < 64 && address & (1u64 << bit) != 0 {
        bit += 1;
    }
    if bit >= 63 {
        return true;
    }
    iova >> (bit + 1) == address >> (bit + 1)
}

#[test]
fn aligned_blocks_round_trip_for_every_order() {
    let mut bases = pseudo_random(0x9E37_79B9_7F4A_7C15);
    for order in 12..=63u32 {
        let mask = !((1u64 << order) - 1);
        for base in [0, mask, bases.next().unwrap() & mask, bases.next().unwrap() & mask] {
            let (address, s) = encode_pages_range(base, order);
            assert_eq!(s, order > 12, "order {order}");
            assert_eq!(address & 0xFFF, 0, "low bits are not part of the address field");
            assert_eq!(
                decode_pages_range(address, s),
                (base, order),
                "order {order} base {base:#x}"
            );
        }
    }
}

#[test]
fn encoded_ranges_cover_exactly_their_block() {
    let mut bases = pseudo_random(42);
    for order in 12..=63u32 {
        let size = 1u64 << order;
        let base = bases.next().unwrap() & !(size - 1);
        let (address, s) = encode_pages_range(base, order);
        let inside = [base, base + size / 2, base + (size - 1)];
        for iova in inside {
            assert!(spec_covers(address, s, iova), "order {order}: {iova:#x} must be covered");
        }
        let outside = [base.wrapping_sub(1), base.wrapping_add(size)];
        for iova in outside {
            let wraps = (base == 0 && iova == u64::MAX) || (base.checked_add(size).is_none());
            if !wraps {
                assert!(
                    !spec_covers(address, s, iova),
                    "order {order}: {iova:#x} must not be covered"
                );
            }
        }
    }
}

#[test]
fn single_page_has_no_size_bit_and_the_page_address() {
    let cmd = Command::invalidate_pages(7, 0x1234_5000, 12);
    let [q0, q1] = cmd.quads();
    assert_eq!(q0, 0x3000_0007_0000_0000);
    assert_eq!(q1, 0x1234_5000 | 0b10, "address, PDE=1, S=0");
}

#[test]
fn two_megabyte_block_hand_encoded() {
    // Order 21: bits 19:12 set, bit 20 clear, S=1, PDE=1.
    let [q0, q1] = Command::invalidate_pages(5, 0x20_0000, 21).quads();
    assert_eq!(q0, 0x3000_0005_0000_0000);
    assert_eq!(q1, 0x2F_F003);
}

#[test]
fn whole_domain_uses_the_all_pages_address() {
    let [q0, q1] = Command::invalidate_domain(0xBEEF).quads();
    assert_eq!(q0, 0x3000_BEEF_0000_0000);
    assert_eq!(q1, ALL_PAGES_ADDRESS | 0b11);
    assert_eq!(
        Command::invalidate_domain(0xBEEF).decode(),
        DecodedCommand::InvalidateIommuPages { domain: 0xBEEF, base: 0, order: 64, pde: true }
    );
    assert!(spec_covers(ALL_PAGES_ADDRESS, true, 0));
    assert!(spec_covers(ALL_PAGES_ADDRESS, true, u64::MAX));
}

#[test]
fn covering_block_is_exact_when_aligned_and_minimal_otherwise() {
    assert_eq!(covering_block(0x20_0000, 21), (0x20_0000, 21));
    assert_eq!(covering_block(0x5000, 12), (0x5000, 12));
    assert_eq!(covering_block(0x5000, 0), (0x5000, 12));
    let mut values = pseudo_random(7);
    for _ in 0..2000 {
        let iova = values.next().unwrap() & 0x0000_FFFF_FFFF_F000;
        let order = 12 + (values.next().unwrap() % 30) as u32;
        let (base, got) = covering_block(iova, order);
        let last = iova + (1u64 << order) - 1;
        assert_eq!(base & ((1u64 << got) - 1), 0, "aligned");
        assert!(base <= iova && last <= base + ((1u64 << got) - 1), "covers");
        if got > order {
            // One order smaller cannot hold both ends.
            let half = got - 1;
            assert_ne!(iova >> half, last >> half, "minimal");
        }
    }
    // Straddling bit 63 needs the whole space; the top page alone stays one page.
    assert_eq!(covering_block((1 << 63) - 0x1000, 13), (0, 64));
    assert_eq!(covering_block(u64::MAX - 0xFFF, 12), (u64::MAX - 0xFFF, 12));
}

#[test]
fn other_command_layouts() {
    let [q0, q1] = Command::completion_wait(0x000F_FFFF_FFFF_F008, 0x1122_3344_5566_7788).quads();
    assert_eq!(q0, 0x100F_FFFF_FFFF_F009, "opcode 1, address 51:3, S=1");
    assert_eq!(q1, 0x1122_3344_5566_7788);
    assert_eq!(Command::invalidate_devtab_entry(0x00A8).quads(), [0x2000_0000_0000_00A8, 0]);
    assert_eq!(Command::invalidate_all().quads(), [0x8000_0000_0000_0000, 0]);
    assert_eq!(Command::invalidate_interrupt_table(0x10).quads(), [0x5000_0000_0000_0010, 0]);
    assert_eq!(
        Command::from_quads([0xF000_0000_0000_0000, 0]).decode(),
        DecodedCommand::Other { opcode: 0xF }
    );
}

#[test]
fn free_slots_keeps_one_slot_empty() {
    let ring = CommandBuffer::new(0x1000);
    let slots = CommandBuffer::LEN / COMMAND_SIZE;
    assert_eq!(ring.free_slots(0), slots - 1);
    assert_eq!(ring.free_slots(16), 0, "head just past the tail: full");
}

#[test]
fn ring_wraps_and_every_command_runs_in_order() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem, 0x00FF).unwrap();
    unit.enable().unwrap();
    let start = state.borrow().commands.len();
    let n = 700u64;
    for i in 0..n {
        unit.invalidate_block(i as u16, IovaBlock { iova: 0, order: 12 }).unwrap();
    }
    unit.completion_wait().unwrap();
    let decoded = decoded_since(&state, start);
    assert_eq!(decoded.len() as u64, n + 1);
    for (i, cmd) in decoded[..n as usize].iter().enumerate() {
        assert_eq!(
            *cmd,
            DecodedCommand::InvalidateIommuPages {
                domain: i as u16,
                base: 0,
                order: 12,
                pde: true
            }
        );
    }
    let issued = unit.stats().commands;
    let tail = state.borrow().regs[&crate::amdvi::regs::COMMAND_TAIL];
    assert_eq!(tail, (issued * COMMAND_SIZE) % CommandBuffer::LEN);
}

#[test]
fn queued_invalidations_reach_the_unit_in_one_batch_at_sync() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem, 0).unwrap();
    unit.enable().unwrap();
    let start = state.borrow().commands.len();
    let accesses = state.borrow().accesses.len();
    for i in 0..10u64 {
        let block = IovaBlock { iova: i << 21, order: 21 };
        unit.invalidate_block(3, block).unwrap();
    }
    assert_eq!(decoded_since(&state, start).len(), 0, "nothing handed over before sync");
    unit.sync().unwrap();
    let cmds = decoded_since(&state, start);
    assert_eq!(cmds.len(), 11);
    assert_eq!(
        cmds[9],
        DecodedCommand::InvalidateIommuPages { domain: 3, base: 9 << 21, order: 21, pde: true }
    );
    let tail_writes = state.borrow().accesses[accesses..]
        .iter()
        .filter(|a| a.0 == crate::amdvi::regs::COMMAND_TAIL)
        .count();
    assert_eq!(tail_writes, 1);
}

#[test]
fn full_ring_on_a_stalled_unit_times_out() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem, 0).unwrap();
    unit.enable().unwrap();
    state.borrow_mut().execute = false;
    let slots = CommandBuffer::LEN / COMMAND_SIZE;
    let mut result = Ok(());
    let mut pushed = 0;
    while result.is_ok() && pushed < slots + 5 {
        result = unit.invalidate_block(1, IovaBlock { iova: 0, order: 12 });
        pushed += 1;
    }
    assert!(matches!(result, Err(HwError::Timeout { .. })), "{result:?}");
    assert_eq!(pushed, slots, "slots - 1 commands fit, the next one waits");
}

#[test]
fn stopped_command_buffer_is_reported_not_timed_out() {
    // A full ring behind a stopped buffer.
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem, 0).unwrap();
    unit.enable().unwrap();
    state.borrow_mut().command_buffer_stopped = true;
    let slots = CommandBuffer::LEN / COMMAND_SIZE;
    let mut result = Ok(());
    let mut pushed = 0;
    while result.is_ok() && pushed < slots + 5 {
        result = unit.invalidate_block(1, IovaBlock { iova: 0, order: 12 });
        pushed += 1;
    }
    let stopped = HwError::QueueError { what: "command buffer stopped" };
    assert_eq!(result, Err(stopped));
    // A completion wait behind a stopped buffer.
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem, 0).unwrap();
    unit.enable().unwrap();
    state.borrow_mut().command_buffer_stopped = true;
    unit.invalidate_block(1, IovaBlock { iova: 0, order: 12 }).unwrap();
    assert_eq!(unit.completion_wait(), Err(stopped));
    // Running, but the store never lands: still a timeout.
    state.borrow_mut().command_buffer_stopped = false;
    state.borrow_mut().store_completions = false;
    assert!(matches!(unit.completion_wait(), Err(HwError::Timeout { .. })));
}

#[test]
fn every_command_slot_is_flushed_for_the_device() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem.clone(), 0).unwrap();
    unit.enable().unwrap();
    for i in 0..300u64 {
        unit.invalidate_block(1, IovaBlock { iova: i << 12, order: 12 }).unwrap();
    }
    unit.completion_wait().unwrap();
    let base_register = state.borrow().regs[&crate::amdvi::regs::COMMAND_BUFFER_BASE];
    let ring = base_register & crate::amdvi::regs::BASE_ADDRESS_MASK;
    let m = mem.0.borrow();
    let slots_written: Vec<u64> = m
        .writes
        .iter()
        .map(|&(addr, _)| addr & !(COMMAND_SIZE - 1))
        .filter(|&slot| (ring..ring + CommandBuffer::LEN).contains(&slot))
        .collect();
    assert!(slots_written.len() > 600, "the ring wrapped at least once");
    for slot in slots_written {
        assert!(m.flushes.contains(&(slot, COMMAND_SIZE)), "slot {slot:#x} not flushed");
    }
}
