//! The edu DMA engine itself, before any IOMMU translates it.
#![deny(unsafe_code)]

use super::dma::TestFrame;
use crate::ensure;
use crate::testing::{TestContext, TestResult};

/// With no translation enabled, edu copies between two physical frames.
pub fn untranslated_copy(ctx: &mut TestContext<'_>) -> TestResult {
    let edu = ctx.platform.edus.first_mut().ok_or("no edu device")?;
    let src = TestFrame::patterned(7);
    let dst = TestFrame::patterned(99);
    let t0 = crate::apic::ticks();
    edu.copy(src.0 + 16, dst.0 + 100, 1000).map_err(|e| alloc::format!("{e}"))?;
    log::info!("edu: 2 DMAs took {} timer ticks", crate::apic::ticks() - t0);
    ensure!(dst.holds(7, 16, 100, 1000), "copied bytes do not match the source");
    ensure!(dst.holds(99, 0, 0, 100), "bytes before the copy were touched");
    ensure!(dst.holds(99, 1100, 1100, 4096 - 1100), "bytes after the copy were touched");
    Ok(())
}
