//! Device assignment through the IOMMU: a partition's DMA address space.
//!
//! The partition owns one [`DmaTracker`] (in its unit's page-table format) holding one
//! mapping of its whole RAM, guest-physical -> host-physical, and one domain per unit
//! its devices sit behind. Attach and teardown are written once, generic over
//! [`RemappingUnit`]; only [`DmaSpace`] knows VT-d from AMD-Vi.
//!
//! Teardown order: each device quiesced (`reset::quiesce`: its own way, then bus
//! mastering off, then in-flight DMA drained, every wait bounded), each device
//! blocked on its unit, the mappings torn down by the tracker; the tracker hands each
//! host extent to the caller's release callback only after the invalidation covering it
//! completed, so guest memory cannot be scrubbed or returned before the flush.
#![deny(unsafe_code)]

mod error;
pub use error::DmaError;

use crate::iommu::{DomainIds, IommuSystem, Route, Units};
use crate::mem::{frames, KernelMemory};
use crate::pci::PciFunction;
use alloc::vec::Vec;
use iommu::domain::Domain;
use iommu::error::HwError;
use iommu::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use iommu::pgtable::amdv1::AmdV1Format;
use iommu::pgtable::vtd::VtdFormat;
use iommu::pgtable::Prot;
use iommu::tracker::{DmaTracker, HostExtent, InvalidatorSet, TrackerCounters, UnmapStrategy};
use iommu::unit::RemappingUnit;

/// The partition's tracker in the page-table format of the machine's IOMMU.
pub enum DmaSpace {
    /// VT-d second-level tables.
    Vtd(DmaTracker<VtdFormat>),
    /// AMD-Vi v1 tables.
    Amd(DmaTracker<AmdV1Format>),
}

/// One device whose DMA the partition's domain translates.
struct Assigned {
    function: PciFunction,
    route: Route,
    /// Every requester id its DMA may carry (the route's first), all attached.
    ids: Vec<u16>,
}

/// What a DMA teardown did and cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct DmaTeardown {
    /// Invalidation commands the units issued during teardown (block + unmap + flush).
    pub invalidations: u64,
    /// The tracker's own counts (unmap calls, invalidations, syncs, table reads).
    pub tracker: TrackerCounters,
    /// Devices that did not go quiet in time (`reset::quiesce`: an NVMe controller that
    /// never cleared CSTS.RDY, DMA still in flight); blocked regardless.
    pub drain_timeouts: u32,
    /// Whether the tracker's probe found fine-grained superpages.
    pub fgsp: bool,
}

/// A partition's IOMMU state: the tracker, its domains, the devices attached to them.
pub struct PartitionDma {
    space: DmaSpace,
    devices: Vec<Assigned>,
    /// Two hypervisor frames, 8 KiB-aligned, for the tracker's fgsp probe.
    probe_pair: u64,
    /// Bytes of IOVA mapped (from 0): what caching-mode units are told about.
    mapped: u64,
    /// Page sizes new domains may use (bit n = 2^n bytes).
    page_sizes: u64,
}

/// The units of one vendor as the tracker's [`InvalidatorSet`].
struct UnitSet<'a, U> {
    units: &'a mut [U],
    missing: NoUnit,
}

/// Stands in for a unit index nobody brought up: every request fails.
struct NoUnit;

impl IotlbInvalidator for NoUnit {
    fn max_block_order(&self) -> u32 {
        12
    }
    fn invalidate_block(&mut self, _: DomainId, _: IovaBlock) -> Result<(), HwError> {
        Err(HwError::Unsupported { what: "a unit that was not brought up" })
    }
    fn invalidate_domain(&mut self, _: DomainId) -> Result<(), HwError> {
        Err(HwError::Unsupported { what: "a unit that was not brought up" })
    }
    fn sync(&mut self) -> Result<(), HwError> {
        Err(HwError::Unsupported { what: "a unit that was not brought up" })
    }
}

impl<U: RemappingUnit> InvalidatorSet for UnitSet<'_, U> {
    fn unit(&mut self, unit: usize) -> &mut dyn IotlbInvalidator {
        match self.units.get_mut(unit) {
            Some(u) => u,
            None => &mut self.missing,
        }
    }
}

fn set<U>(units: &mut [U]) -> UnitSet<'_, U> {
    UnitSet { units, missing: NoUnit }
}

/// Runs the same generic expression on the tracker and units of whichever vendor the
/// machine has.
macro_rules! on_units {
    ($space:expr, $units:expr, |$t:ident, $u:ident| $body:expr) => {
        match ($space, $units) {
            (DmaSpace::Vtd($t), Units::Vtd($u)) => $body,
            (DmaSpace::Amd($t), Units::Amd($u)) => $body,
            _ => Err(DmaError::VendorMismatch),
        }
    };
}

impl PartitionDma {
    /// An empty DMA space for the machine's IOMMU, with the given unmap strategy.
    pub fn new(iommu: &IommuSystem, strategy: UnmapStrategy) -> Result<Self, DmaError> {
        let probe_pair = frames::alloc_contiguous(2, 2 * 4096).ok_or(DmaError::NoProbeMemory)?;
        frames::zero(probe_pair, 2 * 4096);
        let space = match &iommu.units {
            Units::Vtd(_) => DmaSpace::Vtd(DmaTracker::new(strategy, probe_pair)),
            Units::Amd(_) => DmaSpace::Amd(DmaTracker::new(strategy, probe_pair)),
            Units::None => {
                frames::free_contiguous(probe_pair, 2);
                return Err(DmaError::NoIommu);
            }
        };
        Ok(Self { space, devices: Vec::new(), probe_pair, mapped: 0, page_sizes: u64::MAX })
    }

    /// Keeps domains made from now on to the page sizes in `mask` (bit n = 2^n bytes;
    /// 4 KiB always stays): the benchmark's 4K-backed case maps with 4 KiB pages only.
    pub fn restrict_page_sizes(&mut self, mask: u64) {
        self.page_sizes = mask;
    }

    /// Maps guest RAM `[0, size)` onto `extents` (host runs in guest order) as one
    /// tracker mapping, read-write, in every attached domain.
    pub fn map_memory(
        &mut self,
        iommu: &mut IommuSystem,
        extents: &[HostExtent],
    ) -> Result<(), DmaError> {
        let size: u64 = extents.iter().map(|e| e.len).sum();
        on_units!(&mut self.space, &mut iommu.units, |t, u| {
            t.map_dma(&mut KernelMemory, &mut set(u), 0, extents, Prot::READ | Prot::WRITE)
                .map_err(DmaError::MapMemory)
        })?;
        self.mapped = size;
        Ok(())
    }

    /// Attaches `function` (reaching its unit as `route`) to the partition's domain on
    /// that unit (created, fgsp-probed and filled with the mappings on first use), then
    /// turns its bus mastering on.
    pub fn attach(
        &mut self,
        iommu: &mut IommuSystem,
        function: &PciFunction,
        route: Route,
    ) -> Result<DomainId, DmaError> {
        let (mapped, sizes) = (self.mapped, self.page_sizes);
        let mut rids = iommu.dma_ids(function.bdf);
        if rids.first() != Some(&route.requester_id) {
            rids.retain(|&r| r != route.requester_id);
            rids.insert(0, route.requester_id);
        }
        let ids = &mut iommu.domain_ids;
        let id = on_units!(&mut self.space, &mut iommu.units, |t, u| attach_on(
            t, u, ids, route, &rids, mapped, sizes
        ))?;
        function.config().set_bus_master(true);
        self.devices.push(Assigned { function: function.clone(), route, ids: rids });
        Ok(id)
    }

    /// Whether the first domain's probe found fine-grained superpages.
    pub fn fgsp(&self) -> bool {
        match &self.space {
            DmaSpace::Vtd(t) => t.domains().first().is_some_and(|d| d.fgsp()),
            DmaSpace::Amd(t) => t.domains().first().is_some_and(|d| d.fgsp()),
        }
    }

    /// The PCI functions attached (for their reset after teardown).
    pub fn functions(&self) -> Vec<PciFunction> {
        self.devices.iter().map(|d| d.function.clone()).collect()
    }

    /// Quiesces every device (`reset::quiesce`: its own way, bus mastering off, drained),
    /// blocks it on its unit, and tears every mapping down; each host extent goes to
    /// `release` only after the invalidation covering it completed. The probe pages go
    /// back last. On `Err` the pages not yet released must never be reused.
    pub fn teardown(
        mut self,
        iommu: &mut IommuSystem,
        release: &mut dyn FnMut(HostExtent),
    ) -> Result<DmaTeardown, DmaError> {
        let mut report = DmaTeardown { fgsp: self.fgsp(), ..DmaTeardown::default() };
        // Each device quiesced its own way, then bus mastering off (`reset::quiesce`,
        // which logs); one that did not go quiet is blocked regardless.
        for d in &self.devices {
            if !super::reset::quiesce(&d.function).ok() {
                report.drain_timeouts += 1;
            }
        }
        let devices = &self.devices;
        let ids = &mut iommu.domain_ids;
        let (invalidations, tracker) =
            on_units!(&mut self.space, &mut iommu.units, |t, u| teardown_on(
                t, u, ids, devices, release
            ))?;
        report.invalidations = invalidations;
        report.tracker = tracker;
        frames::free_contiguous(self.probe_pair, 2);
        Ok(report)
    }
}

/// [`PartitionDma::attach`] for one vendor.
fn attach_on<U: RemappingUnit>(
    t: &mut DmaTracker<U::Format>,
    units: &mut [U],
    ids: &mut DomainIds,
    route: Route,
    rids: &[u16],
    mapped: u64,
    page_sizes: u64,
) -> Result<DomainId, DmaError> {
    let unit_count = units.len();
    let existing = t.domains().iter().position(|d| d.unit() == route.unit);
    let index = match existing {
        Some(i) => i,
        None => {
            let unit = units
                .get_mut(route.unit)
                .ok_or(DmaError::NoSuchUnit { unit: route.unit, units: unit_count })?;
            let format = unit.domain_format().map_err(DmaError::DomainFormat)?;
            let id = ids.alloc(route.unit)?;
            let dom = match Domain::new(&mut KernelMemory, id, route.unit, format) {
                Ok(d) => d.with_page_sizes(page_sizes),
                Err(e) => {
                    ids.free(route.unit, id);
                    return Err(DmaError::NewDomain(e));
                }
            };
            let attached = t.attach(&mut KernelMemory, &mut set(units), dom);
            let i = match attached {
                Ok(i) => i,
                Err((mut d, e)) => {
                    // No device was pointed at it: once retired, the id and tables can go.
                    let retired = d.retire(&mut KernelMemory, &mut units[route.unit]);
                    match retired.map(|()| d.destroy(&mut KernelMemory)) {
                        Ok(Ok(())) => ids.free(route.unit, id),
                        _ => log::error!("iommu: domain {id} not retired; its tables are kept"),
                    }
                    return Err(DmaError::AttachDomain { id, error: e });
                }
            };
            if mapped > 0 {
                // Caching-mode units may hold not-present entries for the new mappings.
                let order = mapped.next_power_of_two().trailing_zeros().max(12);
                let unit = &mut units[route.unit];
                unit.after_map(id, IovaBlock { iova: 0, order })
                    .and_then(|()| unit.sync())
                    .map_err(DmaError::AfterMap)?;
            }
            i
        }
    };
    let dom = &t.domains()[index];
    // Every id the device's DMA may carry gets the same entry; should one fail, those
    // already attached are blocked again (nothing half-assigned).
    for (n, &rid) in rids.iter().enumerate() {
        if let Err(error) = units[route.unit].attach_device(rid, dom) {
            for &done in &rids[..n] {
                let _ = units[route.unit].block_device(done);
            }
            return Err(DmaError::AttachDevice { rid, error });
        }
    }
    Ok(dom.id())
}

/// Blocks every device, then tears the tracker down; returns the units' invalidation
/// count over the whole operation and the tracker's counters.
fn teardown_on<U: RemappingUnit>(
    t: &mut DmaTracker<U::Format>,
    units: &mut [U],
    ids: &mut DomainIds,
    devices: &[Assigned],
    release: &mut dyn FnMut(HostExtent),
) -> Result<(u64, TrackerCounters), DmaError> {
    let issued = |units: &[U]| units.iter().map(|u| u.invalidations_issued()).sum::<u64>();
    let before = issued(units);
    t.reset_counters();
    for d in devices {
        let missing = DmaError::NoSuchUnit { unit: d.route.unit, units: units.len() };
        let unit = units.get_mut(d.route.unit).ok_or(missing)?;
        for &rid in &d.ids {
            unit.block_device(rid).map_err(|error| DmaError::Block {
                device: d.function.bdf,
                rid,
                error,
            })?;
        }
    }
    let domains =
        t.teardown(&mut KernelMemory, &mut set(units), release).map_err(DmaError::Teardown)?;
    for d in domains {
        // Every device on it was blocked before the teardown, whose domain-wide
        // invalidation retired it: the tables and the id can go.
        let (unit, id) = (d.unit(), d.id());
        d.destroy(&mut KernelMemory).map_err(|_| DmaError::NotRetired { id })?;
        ids.free(unit, id);
    }
    Ok((issued(units) - before, t.counters()))
}
