//! What the tracker's property tests share: host memory layouts behind a mapping, their
//! generator, and the unmap strategies to draw from.

use alloc::vec::Vec;

use proptest::prelude::*;

use super::{HostExtent, UnmapStrategy};
use crate::platform::PAGE_SIZE;

/// How the host pages behind one mapping lie.
#[derive(Debug, Clone, Copy)]
pub(super) enum Layout {
    /// One physically contiguous run.
    Contiguous,
    /// 4 KiB pages, none adjacent to the next.
    Fragmented,
    /// 2 MiB-aligned 2 MiB pieces.
    TwoMeg,
    /// Random power-of-two pieces (4 KiB to 4 MiB), randomly aligned.
    Mixed,
}

/// Any layout.
pub(super) fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        Just(Layout::Contiguous),
        Just(Layout::Fragmented),
        Just(Layout::TwoMeg),
        Just(Layout::Mixed)
    ]
}

/// Any unmap strategy.
pub(super) fn strategy() -> impl Strategy<Value = UnmapStrategy> {
    prop_oneof![
        Just(UnmapStrategy::PageByPage),
        Just(UnmapStrategy::SeedChunked),
        Just(UnmapStrategy::LinuxFgsp),
        Just(UnmapStrategy::Linux2018),
        Just(UnmapStrategy::Gathered)
    ]
}

/// Host memory for `pages` pages in `layout`; `next` hands out fresh physical space
/// (never adjacent to the previous piece).
pub(super) fn host_extents(
    layout: Layout,
    pages: u64,
    seed: u64,
    next: &mut u64,
) -> Vec<HostExtent> {
    let mut rng = seed | 1;
    let mut rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::new();
    let mut left = pages * PAGE_SIZE;
    while left > 0 {
        let len = match layout {
            Layout::Contiguous => left,
            Layout::Fragmented => PAGE_SIZE,
            Layout::TwoMeg => left.min(1 << 21),
            Layout::Mixed => left.min(PAGE_SIZE << (rand() % 11)),
        };
        let align =
            if matches!(layout, Layout::TwoMeg) { 1 << 21 } else { PAGE_SIZE << (rand() % 10) };
        let p = next.div_ceil(align) * align;
        *next = p + len + PAGE_SIZE;
        out.push(HostExtent { paddr: p, len });
        left -= len;
    }
    out
}
