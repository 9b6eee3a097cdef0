//! Helpers for tests that prove things with DMA: patterned frames and comparisons.

use crate::mem::frames;

/// A frame owned by a test, freed on drop.
pub struct TestFrame(pub u64);

impl TestFrame {
    /// A fresh frame filled with `pattern(seed)`.
    pub fn patterned(seed: u8) -> TestFrame {
        let f = TestFrame(frames::alloc().expect("out of frames in a test"));
        f.fill(seed);
        f
    }

    /// Fills the frame with a pattern derived from `seed` (never all zeros).
    pub fn fill(&self, seed: u8) {
        for i in 0..4096u64 {
            // SAFETY: the frame belongs to this test and is identity-mapped.
            unsafe { core::ptr::write_volatile((self.0 + i) as *mut u8, pattern(seed, i)) };
        }
    }

    /// Stores the little-endian `value` at `offset` (4-byte aligned, inside the frame).
    pub fn write_u32(&self, offset: u64, value: u32) {
        let offset = offset.min(4092) & !3;
        // SAFETY: as for `fill`; the offset is clamped inside the frame and aligned.
        unsafe { core::ptr::write_volatile((self.0 + offset) as *mut u32, value) };
    }

    /// The byte at `offset`.
    pub fn byte(&self, offset: u64) -> u8 {
        // SAFETY: as for `fill`.
        unsafe { core::ptr::read_volatile((self.0 + offset) as *const u8) }
    }

    /// Whether `len` bytes from `offset` hold `pattern(seed)` of the same offsets of
    /// a frame filled with `seed`.
    pub fn holds(&self, seed: u8, src_offset: u64, offset: u64, len: u64) -> bool {
        (0..len).all(|i| self.byte(offset + i) == pattern(seed, src_offset + i))
    }
}

impl Drop for TestFrame {
    fn drop(&mut self) {
        frames::free(self.0);
    }
}

/// Whether the `len` bytes at physical `addr` are `pattern(seed, from..from + len)`.
pub fn region_holds(addr: u64, len: u64, seed: u8, from: u64) -> bool {
    // SAFETY: callers name RAM their test owns; RAM is identity-mapped.
    (0..len).all(
        |i| unsafe { core::ptr::read_volatile((addr + i) as *const u8) } == pattern(seed, from + i),
    )
}

/// Writes `pattern(seed, 0..len)` to the `len` bytes at physical `addr`.
pub fn region_fill(addr: u64, len: u64, seed: u8) {
    for i in 0..len {
        // SAFETY: callers name RAM their test owns; RAM is identity-mapped.
        unsafe { core::ptr::write_volatile((addr + i) as *mut u8, pattern(seed, i)) };
    }
}

/// The test pattern: byte `i` of a frame filled with `seed`.
pub fn pattern(seed: u8, i: u64) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(seed) | 1
}
