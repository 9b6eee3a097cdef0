//! The passthrough demonstration `cargo xtask qemu` ends with: the first edu device gets a
//! domain with one page to read and one to write; its DMA lands; the page is unmapped and
//! the IOTLB invalidated; the same DMA then moves nothing (and on VT-d leaves a fault
//! record). Written for a human reading the console, vendor-neutral.

use crate::edu::Edu;
use crate::iommu::{self as kiommu, DomainIds, Route, Units};
use crate::mem::{frames, KernelMemory};
use crate::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use iommu::domain::{Domain, IotlbGather};
use iommu::invalidate::IovaBlock;
use iommu::pgtable::Prot;
use iommu::unit::RemappingUnit;

const MESSAGE: &[u8] = b"hello from the edu device, through the IOMMU";
const SRC_IOVA: u64 = 0x1000_0000;
const DST_IOVA: u64 = 0x1000_1000;
const BLANK: u8 = b'.';

/// Two frames the demo owns: a source holding [`MESSAGE`] and a blank destination.
struct Frames {
    src: u64,
    dst: u64,
}

impl Frames {
    fn new() -> Result<Frames, String> {
        let src = frames::alloc_zeroed().ok_or("out of memory")?;
        let Some(dst) = frames::alloc_zeroed() else {
            frames::free(src);
            return Err("out of memory".into());
        };
        for (i, b) in MESSAGE.iter().enumerate() {
            // SAFETY: `src` is a frame just allocated for the demo; RAM is identity-mapped.
            unsafe { core::ptr::write_volatile((src + i as u64) as *mut u8, *b) };
        }
        let f = Frames { src, dst };
        f.blank_destination();
        Ok(f)
    }

    fn blank_destination(&self) {
        for i in 0..MESSAGE.len() as u64 {
            // SAFETY: as in `new`, for the destination frame.
            unsafe { core::ptr::write_volatile((self.dst + i) as *mut u8, BLANK) };
        }
    }

    /// The destination's first bytes as text.
    fn destination(&self) -> String {
        (0..MESSAGE.len() as u64)
            // SAFETY: as in `new`.
            .map(|i| unsafe { core::ptr::read_volatile((self.dst + i) as *const u8) })
            .map(|b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' })
            .collect()
    }

    fn landed(&self) -> bool {
        self.destination().as_bytes() == MESSAGE
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        frames::free(self.src);
        frames::free(self.dst);
    }
}

fn err(what: &str) -> impl Fn(&dyn core::fmt::Display) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Map, DMA, unmap + invalidate, DMA again, on `unit`. Returns whether the second DMA
/// was blocked.
fn show<U: RemappingUnit>(
    unit: &mut U,
    edu: &mut Edu,
    route: Route,
    ids: &mut DomainIds,
) -> Result<bool, String> {
    let mem = &mut KernelMemory;
    let rid = route.requester_id;
    let f = Frames::new()?;
    let format = unit.domain_format().map_err(|e| err("domain format")(&e))?;
    let id = ids.alloc(route.unit)?;
    let mut dom = match Domain::new(mem, id, route.unit, format) {
        Ok(d) => d,
        Err(e) => {
            ids.free(route.unit, id);
            return Err(err("domain")(&e));
        }
    };
    let len = MESSAGE.len();
    let result = (|| -> Result<bool, String> {
        dom.map(mem, SRC_IOVA, f.src, 4096, Prot::READ).map_err(|e| err("map")(&e))?;
        dom.map(mem, DST_IOVA, f.dst, 4096, Prot::READ | Prot::WRITE)
            .map_err(|e| err("map")(&e))?;
        unit.after_map(dom.id(), IovaBlock { iova: SRC_IOVA, order: 13 })
            .and_then(|()| unit.sync())
            .map_err(|e| err("after map")(&e))?;
        log::info!(
            "demo: domain {}: IOVA {SRC_IOVA:#x} -> frame {:#x} (read-only, holds the message), IOVA {DST_IOVA:#x} -> frame {:#x} (read-write, blank)",
            dom.id(),
            f.src,
            f.dst
        );
        unit.attach_device(rid, &dom).map_err(|e| err("attach")(&e))?;
        log::info!("demo: {} {} attached to domain {}", unit.kind(), edu.bdf, dom.id());
        edu.copy(SRC_IOVA, DST_IOVA, len).map_err(|e| err("edu")(&e))?;
        log::info!("demo: the device copied IOVA {SRC_IOVA:#x} -> {DST_IOVA:#x}; the destination frame reads \"{}\"", f.destination());
        if !f.landed() {
            return Err("the DMA through the mapping did not land".into());
        }
        f.blank_destination();
        let mut gather = IotlbGather::new();
        dom.unmap(mem, DST_IOVA, 4096, &mut gather).map_err(|e| err("unmap")(&e))?;
        let stats = dom.flush(mem, &mut gather, unit).map_err(|e| err("invalidate")(&e))?;
        log::info!(
            "demo: unmapped IOVA {DST_IOVA:#x} and invalidated the IOTLB ({} invalidation), blanked the destination",
            stats.total()
        );
        edu.copy(SRC_IOVA, DST_IOVA, len).map_err(|e| err("edu")(&e))?;
        let blocked = !f.landed();
        log::info!(
            "demo: the device copied again; the destination frame reads \"{}\": the DMA was {}",
            f.destination(),
            if blocked { "blocked" } else { "NOT blocked" }
        );
        Ok(blocked)
    })();
    let mut dom = dom;
    let retired = unit.block_device(rid).and_then(|()| dom.retire(mem, unit));
    match retired.map(|()| dom.destroy(mem)) {
        Ok(Ok(())) => ids.free(route.unit, id),
        Ok(Err(_)) => log::error!("demo: the domain was not retired; its tables are kept"),
        // Leaking the tables is the safe side when the unit may still walk them.
        Err(e) => log::error!("demo: retiring the domain failed ({e}); its tables are kept"),
    }
    result
}

/// Runs the demonstration on the first edu device; Ok when there is nothing to show
/// (no IOMMU or no edu device) and when everything behaved.
pub fn run(p: &mut Platform) -> Result<(), String> {
    let Some(edu) = p.edus.first_mut() else {
        log::info!("demo: no edu device: nothing to demonstrate");
        return Ok(());
    };
    let Some(route) = p.iommu.route(edu.bdf) else {
        log::info!("demo: {} is behind no IOMMU: nothing to demonstrate", edu.bdf);
        return Ok(());
    };
    kiommu::service_faults(&mut p.iommu, |_| {});
    // A destroyed partition that owned the device left its bus mastering off.
    edu.set_bus_master(true);
    log::info!(
        "demo: passthrough of edu {} (requester id {:#06x}) through IOMMU unit {}",
        edu.bdf,
        route.requester_id,
        route.unit
    );
    let ids = &mut p.iommu.domain_ids;
    let blocked = match &mut p.iommu.units {
        Units::None => return Ok(()),
        Units::Vtd(u) => show(&mut u[route.unit], edu, route, ids)?,
        Units::Amd(u) => show(&mut u[route.unit], edu, route, ids)?,
    };
    let mut faults = Vec::new();
    kiommu::service_faults(&mut p.iommu, |f| faults.push(*f));
    for f in &faults {
        log::info!(
            "demo: the unit recorded the blocked DMA: {} at IOVA {:#x} from requester {:#06x}, reason {:#x}",
            if f.write { "write" } else { "read" },
            f.address,
            f.source_id,
            f.reason
        );
    }
    if faults.is_empty() {
        log::info!("demo: no fault record (QEMU's AMD-Vi writes no event log): the blank frame is the proof");
    }
    if !blocked {
        return Err("after unmap and invalidation the DMA still landed".into());
    }
    log::info!("demo: done: the mapped DMA landed, the unmapped one did not");
    Ok(())
}
