//! The VMX backend's VPID allocator, tested as bookkeeping (it runs on every machine).
#![deny(unsafe_code)]

use crate::ensure;
use crate::testing::{TestContext, TestResult};

/// VMX VPIDs (`partition::vmx::vpid`, pure bookkeeping, so it runs on any machine): every
/// VPID handed out is in 1..=0xFFFF and held by one owner only; once all are taken the
/// allocator says so instead of handing one out twice; a VPID given back in the middle,
/// behind the search position, is found again (the search wraps); all come back.
pub fn vpids(_: &mut TestContext<'_>) -> TestResult {
    use crate::partition::vmx::vpid;
    let mut held = alloc::vec![false; 0x1_0000];
    let mut got = alloc::vec::Vec::new();
    while let Some(v) = vpid::allocate() {
        ensure!(v != 0, "VPID 0 (the host's) handed out");
        ensure!(!held[usize::from(v)], "VPID {v} handed out twice");
        held[usize::from(v)] = true;
        got.push(v);
        ensure!(got.len() <= 0xFFFF, "more than 65535 VPIDs handed out");
    }
    let n = got.len();
    // Partitions alive in this boot keep theirs.
    ensure!(n + 16 >= 0xFFFF, "only {n} VPIDs free");
    let middle = got[n / 2];
    vpid::release(middle);
    let again = vpid::allocate();
    let exhausted = vpid::allocate();
    for v in got {
        vpid::release(v);
    }
    log::info!(
        "vpid: {n} VPIDs handed out, each once; {middle} given back and found again after wrapping"
    );
    ensure!(again == Some(middle), "the released VPID {middle} was not found: {again:?}");
    ensure!(exhausted.is_none(), "a VPID handed out while all were in use: {exhausted:?}");
    ensure!(
        vpid::allocate().is_some_and(|v| {
            vpid::release(v);
            true
        }),
        "no VPID after all were given back"
    );
    Ok(())
}
