//! Errors shared by the drivers and the core.

use core::fmt;

/// A failure talking to IOMMU hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwError {
    /// A bounded poll gave up: `what` names the condition that never came true.
    Timeout {
        /// The awaited condition, in words (for example "GSTS.TES set").
        what: &'static str,
    },
    /// The invalidation queue or command buffer reported an error.
    QueueError {
        /// What the hardware reported, in words.
        what: &'static str,
    },
    /// No memory for a table, queue or buffer.
    OutOfMemory,
    /// The hardware lacks a capability the request needs.
    Unsupported {
        /// The missing capability, in words.
        what: &'static str,
    },
}

impl fmt::Display for HwError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HwError::Timeout { what } => write!(f, "timed out waiting for {what}"),
            HwError::QueueError { what } => write!(f, "invalidation error: {what}"),
            HwError::OutOfMemory => f.write_str("out of memory for IOMMU structures"),
            HwError::Unsupported { what } => write!(f, "unsupported by this IOMMU: {what}"),
        }
    }
}
