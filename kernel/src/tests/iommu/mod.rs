//! DMA-proof tests of the IOMMUs, written once for both vendors against
//! [`RemappingUnit`]: translation is proven by data that lands, isolation by data that does
//! not, invalidation by a DMA that stops working after unmap (QEMU keeps stale
//! translations until invalidated, so a missing invalidation makes the DMA succeed).
// No unsafe anywhere in the IOMMU tests: they reach memory and devices through safe APIs.
#![deny(unsafe_code)]

pub mod amd_takeover;
pub mod bench;
pub mod fault_service;
pub mod fgsp;
pub mod fine_grained;
pub mod interrupt_forgery;
pub mod invalidation;
pub mod ir_handoff;
pub mod ir_storm;
pub mod isolation;
pub mod msi_remap;
pub mod reattach;
pub mod reserved;
pub mod strategies;
pub mod teardown;
pub mod translation;
pub mod vtd_faults;
pub mod vtd_takeover;

use crate::edu::Edu;
use crate::iommu::{DomainIds, Units};
use crate::mem::KernelMemory;
use crate::testing::{TestContext, TestResult};
use alloc::format;
use alloc::string::String;
use iommu::domain::Domain;
use iommu::error::HwError;
use iommu::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

/// What a vendor-neutral IOMMU test gets: one unit, the edu device it translates, the
/// device's requester id on that unit, and domain-id allocation.
pub struct Rig<'a, U: RemappingUnit> {
    /// The unit translating the edu device.
    pub unit: &'a mut U,
    /// The edu device (the first one, unless the test picks another).
    pub edu: &'a mut Edu,
    /// Its requester id on `unit`.
    pub rid: u16,
    /// `unit`'s index in the unit list (domain ids are allocated per unit).
    pub unit_index: usize,
    /// Domain ids.
    pub ids: &'a mut DomainIds,
}

/// A test body generic over the unit type (a closure cannot be generic, a trait can).
pub trait IommuTest {
    /// Runs the test on one unit.
    fn run<U: RemappingUnit>(&self, rig: &mut Rig<'_, U>) -> TestResult;
}

/// Runs `test` on the unit that translates edu device number `edu_index`.
pub fn on_edu_unit(
    ctx: &mut TestContext<'_>,
    edu_index: usize,
    test: &impl IommuTest,
) -> TestResult {
    let p = &mut *ctx.platform;
    let edu = p.edus.get_mut(edu_index).ok_or("no such edu device")?;
    let route =
        p.iommu.route(edu.bdf).ok_or_else(|| format!("{} sits behind no IOMMU", edu.bdf))?;
    let ids = &mut p.iommu.domain_ids;
    match &mut p.iommu.units {
        Units::None => Err("this machine has no IOMMU".into()),
        Units::Vtd(units) => {
            let unit = units.get_mut(route.unit).ok_or("route names a missing unit")?;
            test.run(&mut Rig { unit, edu, rid: route.requester_id, unit_index: route.unit, ids })
        }
        Units::Amd(units) => {
            let unit = units.get_mut(route.unit).ok_or("route names a missing unit")?;
            test.run(&mut Rig { unit, edu, rid: route.requester_id, unit_index: route.unit, ids })
        }
    }
}

/// The time-stamp counter, for the cycle counts the teardown tests and the bench log.
pub fn tsc() -> u64 {
    crate::arch::tsc()
}

impl<U: RemappingUnit> Rig<'_, U> {
    /// A fresh, empty domain in the unit's format.
    pub fn new_domain(&mut self) -> Result<Domain<U::Format>, String> {
        let format = self.unit.domain_format().map_err(|e| format!("domain format: {e}"))?;
        let id = self.ids.alloc(self.unit_index)?;
        Domain::new(&mut KernelMemory, id, self.unit_index, format).map_err(|e| {
            self.ids.free(self.unit_index, id);
            format!("new domain: {e}")
        })
    }

    /// Frees `dom`'s tables and gives its id back: only once no device uses it and its
    /// cached translations were invalidated (see [`Rig::retire`]).
    pub fn destroy(&mut self, dom: Domain<U::Format>) {
        let id = dom.id();
        dom.destroy(&mut KernelMemory);
        self.ids.free(self.unit_index, id);
    }

    /// Maps and tells the unit (caching-mode units need an invalidation after map).
    pub fn map(
        &mut self,
        dom: &mut Domain<U::Format>,
        iova: u64,
        paddr: u64,
        size: u64,
        prot: Prot,
    ) -> Result<(), String> {
        dom.map(&mut KernelMemory, iova, paddr, size, prot)
            .map_err(|e| format!("map {iova:#x}+{size:#x}: {e}"))?;
        self.unit
            .after_map(dom.id(), IovaBlock::covering(iova, size))
            .map_err(|e| format!("after map: {e}"))?;
        self.unit.sync().map_err(|e| format!("sync after map: {e}"))
    }

    /// Points the edu device at `dom`.
    pub fn attach(&mut self, dom: &Domain<U::Format>) -> Result<(), String> {
        self.unit.attach_device(self.rid, dom).map_err(|e| format!("attach: {e}"))
    }

    /// Blocks the device, invalidates the domain, and frees its tables.
    pub fn retire(&mut self, dom: Domain<U::Format>) -> Result<(), String> {
        self.unit.block_device(self.rid).map_err(|e| format!("block: {e}"))?;
        self.unit.invalidate_domain(dom.id()).map_err(|e| format!("invalidate: {e}"))?;
        self.unit.sync().map_err(|e| format!("sync: {e}"))?;
        self.destroy(dom);
        Ok(())
    }

    /// edu copies `len` bytes from `src` to `dst` (IOVAs); an edu failure is a test error.
    pub fn copy(&mut self, src: u64, dst: u64, len: usize) -> Result<(), String> {
        self.edu.copy(src, dst, len).map_err(|e| format!("edu: {e}"))
    }
}

/// An invalidator that does nothing: the control case that shows a missing invalidation
/// leaves the stale translation working (so the invalidation tests can fail).
pub struct SuppressedInvalidation;

impl IotlbInvalidator for SuppressedInvalidation {
    fn max_block_order(&self) -> u32 {
        63
    }
    fn invalidate_block(&mut self, _: DomainId, _: IovaBlock) -> Result<(), HwError> {
        Ok(())
    }
    fn invalidate_domain(&mut self, _: DomainId) -> Result<(), HwError> {
        Ok(())
    }
    fn sync(&mut self) -> Result<(), HwError> {
        Ok(())
    }
}
