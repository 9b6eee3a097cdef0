//! Host memory standing in for physical memory: table frames in one growable arena.

use std::cell::Cell;
use std::collections::HashSet;

use crate::platform::{FrameAllocator, PhysAddr, PhysMemory, PAGE_SIZE};

/// Where the arena's first frame sits (not 0, so a null table pointer is caught).
pub const ARENA_BASE: PhysAddr = 0x10_0000_0000;

/// Frames for tables, word access to them, and bookkeeping that catches leaks,
/// double frees, stray accesses and writes not flushed for a non-coherent device.
#[derive(Debug, Default)]
pub struct HostMemory {
    words: Vec<u64>,
    live: Vec<bool>,
    free: Vec<usize>,
    live_count: usize,
    /// Frames ever handed out.
    pub allocations: u64,
    /// When set, every write is remembered until `flush_for_device` covers it.
    pub check_flushes: bool,
    unflushed: HashSet<PhysAddr>,
    /// Accesses outside live frames, double frees and the like, in words.
    pub violations: Vec<String>,
    /// Reads of words outside live frames (a walk through a freed table).
    pub bad_reads: Cell<u64>,
    /// When `Some(n)`, the allocation after `n` more succeed fails once (injected
    /// out-of-memory for rollback tests).
    pub fail_alloc_in: Option<u32>,
    /// Words read (the benchmark's PTE reads).
    pub reads: Cell<u64>,
    /// Words written (the benchmark's PTE writes).
    pub writes: u64,
}

impl HostMemory {
    /// Empty memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty memory that tracks unflushed writes.
    pub fn strict() -> Self {
        Self { check_flushes: true, ..Self::default() }
    }

    /// Frames currently allocated.
    pub fn live_frames(&self) -> usize {
        self.live_count
    }

    /// Words written and not yet flushed for the device (0 when every write was flushed).
    pub fn unflushed_words(&self) -> usize {
        self.unflushed.len()
    }

    /// True if `addr` was written and not yet flushed for the device.
    pub fn is_unflushed(&self, addr: PhysAddr) -> bool {
        self.unflushed.contains(&(addr & !7))
    }

    /// True if `addr` lies in a frame that is currently allocated.
    pub fn is_live(&self, addr: PhysAddr) -> bool {
        let Some(off) = addr.checked_sub(ARENA_BASE) else { return false };
        self.live.get((off / PAGE_SIZE) as usize).copied().unwrap_or(false)
    }

    /// Makes room for `frames` more frames before they are needed, so a benchmark's
    /// timed region does not include the host OS faulting the arena in (physical memory
    /// the hypervisor allocates from already exists). Allocation still zeroes each frame.
    pub fn reserve_frames(&mut self, frames: usize) {
        let first = self.live.len();
        self.words.resize(self.words.len() + frames * 512, 0);
        self.live.resize(first + frames, false);
        // Popped from the end: lowest address first, as an empty arena would hand out.
        self.free.extend((first..first + frames).rev());
    }

    /// The words `[addr, addr + 8n)` if they are aligned and inside one live frame.
    fn run(&self, addr: PhysAddr, n: usize) -> Option<core::ops::Range<usize>> {
        let i = self.word(addr)?;
        (i % 512 + n <= 512).then_some(i..i + n)
    }

    fn word(&self, addr: PhysAddr) -> Option<usize> {
        let off = addr.checked_sub(ARENA_BASE)?;
        let frame = (off / PAGE_SIZE) as usize;
        (addr & 7 == 0 && *self.live.get(frame)?).then_some((off / 8) as usize)
    }
}

impl FrameAllocator for HostMemory {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        match self.fail_alloc_in {
            Some(0) => {
                self.fail_alloc_in = None;
                return None;
            }
            Some(n) => self.fail_alloc_in = Some(n - 1),
            None => {}
        }
        let frame = match self.free.pop() {
            Some(f) => {
                self.words[f * 512..(f + 1) * 512].fill(0);
                f
            }
            None => {
                self.words.resize(self.words.len() + 512, 0);
                self.live.push(false);
                self.live.len() - 1
            }
        };
        self.live[frame] = true;
        self.live_count += 1;
        self.allocations += 1;
        Some(ARENA_BASE + frame as u64 * PAGE_SIZE)
    }

    fn free_frame(&mut self, addr: PhysAddr) {
        let frame = (addr.wrapping_sub(ARENA_BASE) / PAGE_SIZE) as usize;
        if addr & 0xFFF != 0 || !self.live.get(frame).copied().unwrap_or(false) {
            self.violations.push(format!("free of non-live frame {addr:#x}"));
            return;
        }
        self.live[frame] = false;
        self.live_count -= 1;
        self.free.push(frame);
    }
}

impl PhysMemory for HostMemory {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.reads.set(self.reads.get() + 1);
        match self.word(addr) {
            Some(i) => self.words[i],
            None => {
                self.bad_reads.set(self.bad_reads.get() + 1);
                u64::MAX
            }
        }
    }

    fn write_u64(&mut self, addr: PhysAddr, value: u64) {
        self.writes += 1;
        match self.word(addr) {
            Some(i) => {
                self.words[i] = value;
                if self.check_flushes {
                    self.unflushed.insert(addr);
                }
            }
            None => self.violations.push(format!("write to non-live {addr:#x}")),
        }
    }

    fn first_nonzero(&self, addr: PhysAddr, n: usize) -> Option<usize> {
        let Some(run) = self.run(addr, n) else {
            // Outside one live frame: word by word, so each stray read is counted.
            return (0..n).find(|&i| self.read_u64(addr + 8 * i as u64) != 0);
        };
        self.reads.set(self.reads.get() + n as u64);
        let words = &self.words[run];
        // An OR over the run (vectorised), the position only when something is there.
        if words.iter().fold(0, |acc, &w| acc | w) == 0 {
            None
        } else {
            words.iter().position(|&w| w != 0)
        }
    }

    fn write_words(&mut self, addr: PhysAddr, words: &[u64]) {
        match self.run(addr, words.len()) {
            Some(run) if !self.check_flushes => {
                self.writes += words.len() as u64;
                self.words[run].copy_from_slice(words);
            }
            _ => {
                for (i, &w) in words.iter().enumerate() {
                    self.write_u64(addr + 8 * i as u64, w);
                }
            }
        }
    }

    fn write_run(&mut self, addr: PhysAddr, first: u64, step: u64, n: usize) {
        let run = match self.run(addr, n) {
            Some(run) if !self.check_flushes => run,
            _ => {
                // Strict or stray: word by word, so every write is tracked or reported.
                for i in 0..n {
                    let value = first.wrapping_add(step.wrapping_mul(i as u64));
                    self.write_u64(addr + 8 * i as u64, value);
                }
                return;
            }
        };
        self.writes += n as u64;
        let mut value = first;
        for w in &mut self.words[run] {
            *w = value;
            value = value.wrapping_add(step);
        }
    }

    fn flush_for_device(&mut self, addr: PhysAddr, len: u64) {
        if self.check_flushes {
            let mut a = addr & !7;
            while a < addr + len {
                self.unflushed.remove(&a);
                a += 8;
            }
        }
    }
}
