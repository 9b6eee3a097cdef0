//! A guest-physical page outside guest RAM that the hypervisor maps only when the guest
//! first touches it (a fresh zeroed frame, write-back): the nested-paging exit an access
//! to it causes is the one a lazily backed page or a trapped page causes on a real
//! hypervisor. The re-delivery test (`tests/redelivery_tests.rs`) puts a guest's
//! interrupt stack there, so the first interrupt's delivery exits; each fault records
//! whether it interrupted an event's delivery.
#![deny(unsafe_code)]

use super::npt::{MemoryType, NestedTables};
use super::PartitionError;
use crate::mem::frames;

/// One page mapped on its first access.
#[derive(Debug)]
pub struct DemandPage {
    gpa: u64,
    frame: Option<u64>,
    /// Nested-paging exits it served (1 once mapped).
    pub faults: u64,
    /// Of those, the ones that interrupted the delivery of an event (the backend's
    /// `GuestControl::delivering_event`).
    pub during_delivery: u64,
}

impl DemandPage {
    /// A page at `gpa` (4 KiB-aligned, not mapped in `npt`), not yet backed.
    pub fn new(gpa: u64, npt: &NestedTables) -> Result<DemandPage, PartitionError> {
        if !gpa.is_multiple_of(4096) || gpa >= guest::IDENTITY_MAP_END {
            return Err(super::npt::NptError::Misaligned(gpa).into());
        }
        if npt.translate(gpa).is_some() {
            return Err(super::npt::NptError::AlreadyMapped(gpa).into());
        }
        Ok(DemandPage { gpa, frame: None, faults: 0, during_delivery: 0 })
    }

    /// Whether a nested-paging fault at `gpa` is this page's first access.
    pub fn covers(&self, gpa: u64) -> bool {
        self.frame.is_none() && gpa & !0xFFF == self.gpa
    }

    /// Serves the fault: maps a fresh zeroed frame at the page (the caller then tells
    /// the vCPU its nested tables changed).
    pub fn fault(
        &mut self,
        npt: &mut NestedTables,
        delivering: bool,
    ) -> Result<(), PartitionError> {
        self.faults += 1;
        self.during_delivery += u64::from(delivering);
        let frame = frames::alloc_zeroed().ok_or(PartitionError::OutOfMemory { wanted: 4096 })?;
        if let Err(e) = npt.map_page(self.gpa, frame, 4096, MemoryType::WriteBack) {
            frames::free(frame);
            return Err(e.into());
        }
        self.frame = Some(frame);
        Ok(())
    }
}

impl Drop for DemandPage {
    fn drop(&mut self) {
        // The partition drops its nested tables before this (field order) or tore them
        // down already; the page held guest data: zero it before reuse.
        if let Some(f) = self.frame.take() {
            frames::zero(f, 4096);
            frames::free(f);
        }
    }
}
