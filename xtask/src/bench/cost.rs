//! The cost model for what the host benchmark cannot execute: invalidation commands and
//! completion waits. Their modelled cost is added to the measured CPU time (nothing
//! spins), so a 1 TiB teardown runs in minutes and the ratios include the flushes that
//! dominate a real teardown.
//!
//! Figures:
//! - one completion wait, with the invalidation command it waits for: 800 ns. Measured on
//!   real Intel hardware by Barret Rhoden for the Akaros IOTLB shootdown (commit "proc:
//!   iommu: flush the iotlb during shootdowns", 2020: "If you do, it's pretty expensive:
//!   800 ns or so", part of it "because we have to wait for a response from the IOMMU
//!   hardware").
//! - each further command queued before the same wait: 100 ns. An assumption, not a
//!   published measurement (a 16-byte descriptor written to the queue plus the unit's
//!   processing of one page-selective invalidation); change it with `--cmd-ns`.

/// Nanoseconds charged per completion wait and per invalidation command beyond the first
/// of each wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostModel {
    /// Per completion wait, including one command.
    pub sync_ns: u64,
    /// Per further command.
    pub cmd_ns: u64,
}

impl CostModel {
    /// The figures above.
    pub const DEFAULT: CostModel = CostModel { sync_ns: 800, cmd_ns: 100 };
    /// CPU work only.
    pub const ZERO: CostModel = CostModel { sync_ns: 0, cmd_ns: 0 };

    /// Modelled nanoseconds of `invalidations` commands and `waits` completion waits.
    pub fn nanos(&self, invalidations: u64, waits: u64) -> u64 {
        let extra = invalidations.saturating_sub(waits);
        waits * self.sync_ns + extra * self.cmd_ns
    }
}
