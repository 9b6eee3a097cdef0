//! Domain-id allocation per unit (VT-d CAP.ND, AMD-Vi 65536 ids), never 0.

use super::DomainIdError;
use alloc::vec::Vec;
use iommu::invalidate::DomainId;

/// Hands out domain ids per unit, each below that unit's domain count (VT-d CAP.ND,
/// AMD-Vi 65536), never one that is live, and never 0 (VT-d caching-mode units reserve
/// it). Ids are handed out round-robin, so a freed id is reused as late as possible.
#[derive(Debug, Default)]
pub struct DomainIds {
    units: Vec<UnitDomainIds>,
}

/// One unit's id space: a bit per id, set while the id is live.
#[derive(Debug)]
struct UnitDomainIds {
    count: u32,
    live: Vec<u64>,
    next: u32,
}

impl UnitDomainIds {
    fn is_live(&self, id: u32) -> bool {
        self.live[(id / 64) as usize] & 1 << (id % 64) != 0
    }

    fn set(&mut self, id: u32, live: bool) {
        let word = &mut self.live[(id / 64) as usize];
        if live {
            *word |= 1 << (id % 64);
        } else {
            *word &= !(1 << (id % 64));
        }
    }
}

impl DomainIds {
    /// Id spaces for units with these domain counts (in unit order); counts above 65536
    /// are cut to what a [`DomainId`] can name.
    pub fn new(counts: impl IntoIterator<Item = u32>) -> DomainIds {
        let units = counts
            .into_iter()
            .map(|c| {
                let count = c.min(1 << 16);
                UnitDomainIds { count, live: alloc::vec![0; count.div_ceil(64) as usize], next: 1 }
            })
            .collect();
        DomainIds { units }
    }

    /// Adds the id space of the next unit (`count` ids, cut as in [`new`](Self::new));
    /// returns its unit index.
    pub fn add_unit(&mut self, count: u32) -> usize {
        let count = count.min(1 << 16);
        let live = alloc::vec![0; count.div_ceil(64) as usize];
        self.units.push(UnitDomainIds { count, live, next: 1 });
        self.units.len() - 1
    }

    /// Drops the last unit's id space (its unit failed to start after it was added).
    pub fn remove_last(&mut self) {
        self.units.pop();
    }

    /// A domain id on `unit` that no live domain there uses; `Err` (with the reason) when
    /// every id the unit supports is live or the unit does not exist.
    pub fn alloc(&mut self, unit: usize) -> Result<DomainId, DomainIdError> {
        let space = self.units.get_mut(unit).ok_or(DomainIdError::NoSuchUnit(unit))?;
        // Ids 1..count are usable.
        for _ in 1..space.count {
            let id = space.next;
            space.next = if id + 1 >= space.count { 1 } else { id + 1 };
            if !space.is_live(id) {
                space.set(id, true);
                return Ok(id as DomainId);
            }
        }
        Err(DomainIdError::Exhausted { unit, usable: space.count.saturating_sub(1) })
    }

    /// Gives `id` on `unit` back: call only after the domain's devices were blocked and
    /// its cached translations invalidated (the id may be handed out again).
    pub fn free(&mut self, unit: usize, id: DomainId) {
        if let Some(space) = self.units.get_mut(unit) {
            let id = id as u32;
            if id != 0 && id < space.count {
                space.set(id, false);
            }
        }
    }

    /// Ids live on `unit` (for tests and logs).
    pub fn live(&self, unit: usize) -> usize {
        self.units.get(unit).map_or(0, |s| s.live.iter().map(|w| w.count_ones() as usize).sum())
    }
}
