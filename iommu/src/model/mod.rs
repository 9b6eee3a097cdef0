//! The reference model for host tests and benchmarks: host memory that tracks its
//! frames, and a software IOMMU that walks tables by the specifications.

mod iommu;
mod memory;
mod shared;
#[cfg(test)]
mod tests;
mod walk_cache;

pub use iommu::{Fault, Invalidation, ModelIommu, ModelKind};
pub use memory::{HostMemory, ARENA_BASE};
pub use shared::SharedModel;
