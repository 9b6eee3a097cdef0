//! The shared ring on its own: slot accounting, wrap, full ring, publication, flushing.

use super::{DescriptorRing, EntryVisibility, ENTRY_SIZE, MAX_ENTRIES_LOG2};
use crate::error::HwError;
use crate::model::HostMemory;
use crate::platform::{FrameAllocator, PhysMemory};

/// A four-slot ring (three usable) in a fresh frame.
fn small_ring(visibility: EntryVisibility) -> (HostMemory, DescriptorRing) {
    let mut mem = HostMemory::strict();
    let base = mem.alloc_zeroed_frame().unwrap();
    (mem, DescriptorRing::new(base, 2, visibility))
}

fn entry(i: u64) -> [u64; 2] {
    [0xA000 + i, 0xB000 + i]
}

fn read_slot(mem: &HostMemory, ring: &DescriptorRing, slot: u64) -> [u64; 2] {
    let at = ring.base() + slot * ENTRY_SIZE;
    [mem.read_u64(at), mem.read_u64(at + 8)]
}

#[test]
fn empty_ring_keeps_one_slot_free() {
    let (_, ring) = small_ring(EntryVisibility::Coherent);
    assert_eq!(ring.entries(), 4);
    assert_eq!(ring.bytes(), 64);
    assert_eq!(ring.free_slots(0), 3);
    assert_eq!(ring.free_slots(1), 0, "head just past the tail: full");
    assert!(!ring.is_full());
}

#[test]
fn pushes_land_in_consecutive_slots_and_publish_once_per_batch() {
    let (mut mem, mut ring) = small_ring(EntryVisibility::Coherent);
    assert_eq!(ring.publish(), None, "nothing pushed yet");
    ring.push(&mut mem, entry(0)).unwrap();
    ring.push(&mut mem, entry(1)).unwrap();
    assert_eq!(read_slot(&mem, &ring, 0), entry(0));
    assert_eq!(read_slot(&mem, &ring, 1), entry(1));
    assert_eq!(ring.tail(), 2);
    assert_eq!(ring.published(), 0);
    assert_eq!(ring.publish(), Some(2));
    assert_eq!(ring.published(), 2);
    assert_eq!(ring.publish(), None, "the same tail is not published twice");
}

#[test]
fn full_ring_refuses_and_writes_nothing() {
    let (mut mem, mut ring) = small_ring(EntryVisibility::Coherent);
    for i in 0..3 {
        ring.push(&mut mem, entry(i)).unwrap();
    }
    assert!(ring.is_full());
    let refused = ring.push(&mut mem, entry(9));
    assert!(matches!(refused, Err(HwError::QueueError { .. })), "{refused:?}");
    assert_eq!(ring.tail(), 3);
    assert_eq!(read_slot(&mem, &ring, 3), [0, 0], "the empty slot stays empty");
}

#[test]
fn observed_head_frees_slots_and_the_tail_wraps() {
    let (mut mem, mut ring) = small_ring(EntryVisibility::Coherent);
    for i in 0..3 {
        ring.push(&mut mem, entry(i)).unwrap();
    }
    assert!(!ring.observe_head(0), "head still at 0: no space");
    assert!(ring.observe_head(2), "two entries consumed");
    assert_eq!(ring.head_seen(), 2);
    ring.push(&mut mem, entry(3)).unwrap();
    ring.push(&mut mem, entry(4)).unwrap();
    assert_eq!(ring.tail(), 1, "wrapped past the end");
    assert_eq!(read_slot(&mem, &ring, 3), entry(3));
    assert_eq!(read_slot(&mem, &ring, 0), entry(4));
    assert!(ring.is_full());
    assert_eq!(ring.publish(), Some(1));
}

#[test]
fn head_reading_the_ring_size_means_zero() {
    // QEMU's AMD-Vi head register reads the buffer size instead of 0 after a wrap.
    let (mut mem, mut ring) = small_ring(EntryVisibility::Coherent);
    for i in 0..3 {
        ring.push(&mut mem, entry(i)).unwrap();
    }
    assert!(ring.observe_head(3));
    ring.push(&mut mem, entry(3)).unwrap();
    ring.push(&mut mem, entry(4)).unwrap();
    assert!(ring.observe_head(4), "head = size: everything consumed");
    assert_eq!(ring.head_seen(), 0);
    assert_eq!(ring.free_slots(4), ring.free_slots(0));
    assert_eq!(ring.free_slots(0), 2);
}

#[test]
fn mark_consumed_frees_every_published_entry() {
    let (mut mem, mut ring) = small_ring(EntryVisibility::Coherent);
    for i in 0..3 {
        ring.push(&mut mem, entry(i)).unwrap();
    }
    ring.publish();
    ring.mark_consumed();
    assert_eq!(ring.head_seen(), 3);
    assert_eq!(ring.free_slots(ring.head_seen()), 3);
    ring.push(&mut mem, entry(3)).unwrap();
}

#[test]
fn reset_empties_the_ring() {
    let (mut mem, mut ring) = small_ring(EntryVisibility::Coherent);
    ring.push(&mut mem, entry(0)).unwrap();
    ring.publish();
    ring.observe_head(1);
    ring.reset();
    assert_eq!((ring.tail(), ring.published(), ring.head_seen()), (0, 0, 0));
    assert_eq!(ring.publish(), None);
}

#[test]
fn overwrite_replaces_the_entry_at_an_index_modulo_the_size() {
    let (mut mem, mut ring) = small_ring(EntryVisibility::Coherent);
    ring.push(&mut mem, entry(0)).unwrap();
    ring.push(&mut mem, entry(1)).unwrap();
    ring.overwrite(&mut mem, 5, [7, 8]);
    assert_eq!(read_slot(&mem, &ring, 1), [7, 8]);
    assert_eq!(read_slot(&mem, &ring, 0), entry(0));
    assert_eq!(ring.tail(), 2, "the tail does not move");
}

#[test]
fn flushing_ring_leaves_nothing_unflushed_and_coherent_ring_flushes_nothing() {
    let (mut mem, mut ring) = small_ring(EntryVisibility::FlushEachEntry);
    ring.push(&mut mem, entry(0)).unwrap();
    ring.overwrite(&mut mem, 2, entry(2));
    assert_eq!(mem.unflushed_words(), 0);
    let (mut mem, mut ring) = small_ring(EntryVisibility::Coherent);
    ring.push(&mut mem, entry(0)).unwrap();
    assert!(mem.is_unflushed(ring.base()));
    assert!(mem.is_unflushed(ring.base() + 8));
}

#[test]
fn sizes_are_powers_of_two_up_to_the_specification_limit() {
    assert_eq!(DescriptorRing::new(0, 8, EntryVisibility::Coherent).bytes(), 4096);
    let largest = DescriptorRing::new(0, 40, EntryVisibility::Coherent);
    assert_eq!(largest.entries(), 1 << MAX_ENTRIES_LOG2);
}
