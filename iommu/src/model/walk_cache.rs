//! The model's page-walk cache: the next-level table pointers a unit keeps between walks
//! (VT-d paging-structure caches, AMD-Vi PDE cache).
//!
//! A walk that misses the IOTLB starts from the deepest cached table for its IOVA, so a
//! table page freed (or reused) while a cached pointer to it survives is walked anyway:
//! the walk reads a dead frame (counted by `HostMemory::bad_reads`) or another table's
//! entries (a wrong translation). Entries are dropped only by an invalidation that
//! completes and whose range meets the span the cached table translates, as VT-d
//! page-selective invalidations (IH = 0) and AMD-Vi INVALIDATE_IOMMU_PAGES with PDE = 1 do.

use std::collections::HashMap;

use super::iommu::WalkStart;
use super::ModelIommu;
use crate::invalidate::DomainId;
use crate::pgtable::{level_shift, Prot};
use crate::platform::{PhysAddr, PhysMemory};

use super::Fault;

/// Cached next-level tables: (domain, table level, first IOVA it translates) -> the
/// table and the access granted above it.
#[derive(Debug, Default)]
pub struct WalkCache {
    entries: HashMap<(DomainId, u32, u64), (PhysAddr, Prot)>,
}

/// First IOVA of the span a table at `level` translates, for `iova`.
fn span_base(level: u32, iova: u64) -> u64 {
    let bits = level_shift(level) + 9;
    if bits >= 64 {
        0
    } else {
        iova & !((1u64 << bits) - 1)
    }
}

fn span_end(level: u32, base: u64) -> u64 {
    base.saturating_add(1u64 << (level_shift(level) + 9).min(63))
}

impl WalkCache {
    /// Drops the cached tables of `domain` whose span meets `[start, end)`.
    pub fn invalidate(&mut self, domain: DomainId, start: u64, end: u64) {
        self.entries.retain(|&(d, level, base), _| {
            d != domain || span_end(level, base) <= start || base >= end
        });
    }

    /// Every cached table pointer (for checks that none points at a freed frame).
    pub fn tables(&self) -> impl Iterator<Item = PhysAddr> + '_ {
        self.entries.values().map(|&(t, _)| t)
    }
}

impl ModelIommu {
    /// A table walk for `page` of `domain` that starts at the deepest cached table and
    /// caches every table it follows.
    pub(super) fn walk_cached<M: PhysMemory>(
        &mut self,
        mem: &M,
        domain: DomainId,
        root: PhysAddr,
        levels: u32,
        page: u64,
    ) -> Result<(PhysAddr, Prot), Fault> {
        let mut start = WalkStart { table: root, level: levels, prot: Prot::READ | Prot::WRITE };
        for level in 1..levels {
            if let Some(&(table, prot)) =
                self.pwc.entries.get(&(domain, level, span_base(level, page)))
            {
                start = WalkStart { table, level, prot };
                break;
            }
        }
        let mut seen = Vec::new();
        let result = self.walk_from(mem, start, page, &mut |level, table, prot| {
            seen.push((level, table, prot));
        });
        if !self.cache_disabled {
            for (level, table, prot) in seen {
                self.pwc.entries.insert((domain, level, span_base(level, page)), (table, prot));
            }
        }
        result
    }

    /// Table pointers the page-walk cache holds.
    pub fn cached_tables(&self) -> Vec<PhysAddr> {
        self.pwc.tables().collect()
    }
}
