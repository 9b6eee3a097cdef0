//! Model physical memory shared by the driver (tables, queue) and the register model
//! (queue reads, wait-descriptor status writes).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use crate::platform::{FrameAllocator, PhysAddr, PhysMemory, PAGE_SIZE};

/// Frames by base address, plus a log of cache flushes the driver requested.
#[derive(Default)]
pub struct ModelMemory {
    frames: BTreeMap<PhysAddr, Box<[u64; 512]>>,
    next: PhysAddr,
    /// Frames still allowed to be allocated (`None` = unlimited).
    pub frames_left: Option<usize>,
    /// Every `flush_for_device(addr, len)` call, in order.
    pub flushes: Vec<(PhysAddr, u64)>,
    /// Frames given back.
    pub freed: Vec<PhysAddr>,
    /// 64-byte lines written by the CPU and not flushed since: what a non-coherent unit
    /// might not see yet.
    pub dirty: BTreeSet<PhysAddr>,
}

impl ModelMemory {
    fn frame(&self, addr: PhysAddr) -> &[u64; 512] {
        self.frames
            .get(&(addr & !(PAGE_SIZE - 1)))
            .unwrap_or_else(|| panic!("access to unallocated memory at {addr:#x}"))
    }

    /// Reads a word (panics on unallocated memory: a wild pointer in the driver).
    pub fn read(&self, addr: PhysAddr) -> u64 {
        assert_eq!(addr % 8, 0, "unaligned read at {addr:#x}");
        self.frame(addr)[((addr % PAGE_SIZE) / 8) as usize]
    }

    /// Writes a word.
    pub fn write(&mut self, addr: PhysAddr, value: u64) {
        assert_eq!(addr % 8, 0, "unaligned write at {addr:#x}");
        let frame = self
            .frames
            .get_mut(&(addr & !(PAGE_SIZE - 1)))
            .unwrap_or_else(|| panic!("write to unallocated memory at {addr:#x}"));
        frame[((addr % PAGE_SIZE) / 8) as usize] = value;
        self.dirty.insert(addr & !63);
    }

    /// Writes 32 bits at a 4-byte aligned address (the unit's status writes).
    pub fn write32(&mut self, addr: PhysAddr, value: u32) {
        let word = addr & !7;
        let shift = (addr & 4) * 8;
        let old = self.read(word);
        self.write(word, (old & !(0xFFFF_FFFFu64 << shift)) | (u64::from(value) << shift));
    }

    /// Dirty (written, unflushed) lines inside the frame at `frame`.
    pub fn dirty_in(&self, frame: PhysAddr) -> Vec<PhysAddr> {
        self.dirty.range(frame..frame + PAGE_SIZE).copied().collect()
    }

    /// Whether `[addr, addr+len)` was covered by some flush request.
    pub fn was_flushed(&self, addr: PhysAddr, len: u64) -> bool {
        self.flushes.iter().any(|&(a, l)| a <= addr && addr + len <= a + l)
    }
}

/// A cloneable handle: the driver owns one, the register model and the test keep others.
#[derive(Clone, Default)]
pub struct SharedMemory(pub Rc<RefCell<ModelMemory>>);

impl SharedMemory {
    /// Fresh memory whose frames start at 1 MiB.
    pub fn new() -> Self {
        let mem = SharedMemory::default();
        mem.0.borrow_mut().next = 0x10_0000;
        mem
    }
}

impl FrameAllocator for SharedMemory {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        let mut m = self.0.borrow_mut();
        if let Some(left) = m.frames_left.as_mut() {
            if *left == 0 {
                return None;
            }
            *left -= 1;
        }
        let frame = m.next;
        m.next += PAGE_SIZE;
        m.frames.insert(frame, Box::new([0; 512]));
        Some(frame)
    }

    fn free_frame(&mut self, frame: PhysAddr) {
        let mut m = self.0.borrow_mut();
        m.frames.remove(&frame);
        m.freed.push(frame);
    }
}

impl PhysMemory for SharedMemory {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.0.borrow().read(addr)
    }
    fn write_u64(&mut self, addr: PhysAddr, value: u64) {
        self.0.borrow_mut().write(addr, value)
    }
    fn flush_for_device(&mut self, addr: PhysAddr, len: u64) {
        let mut m = self.0.borrow_mut();
        m.flushes.push((addr, len));
        let lines: Vec<PhysAddr> = m.dirty.range((addr & !63)..addr + len).copied().collect();
        for line in lines {
            m.dirty.remove(&line);
        }
    }
}
