//! Faults are serviced all the time, not only when a test asks: a unit's interrupt is
//! noted by its handler and the fault records / event log are drained in thread context
//! on the exit the interrupt caused (`partition::isolation::run_serviced`, which every
//! partition run of the story uses).
//!
//! VT-d: a partition's guest makes its edu device DMA beyond its memory during an
//! ordinary run; the fault is read, cleared and logged before the run returns, with no
//! call from the test. Control: the same guest run without the service leaves the
//! record behind for a later caller, so the test can fail.
//!
//! AMD-Vi: QEMU (7.2 and 10.0) writes no event for a refused DMA, so what can be shown
//! is the interrupt path: the unit's interrupt arrives through the MSI of the IOMMU's own
//! PCI function (raised on purpose by a COMPLETION_WAIT with I=1) and starts a drain.
//! Control: with that MSI disabled no interrupt arrives.

use crate::ensure;
use crate::iommu::{self as kiommu, Units};
use crate::partition::config::{create_all, destroy_all};
use crate::partition::isolation::run_serviced;
use crate::partition::{Budget, Stop};
use crate::pci::Bdf;
use crate::testing::{TestContext, TestResult};
use crate::Platform;
use alloc::format;

/// One partition with the first edu device; the normal guest DMAs beyond its memory.
const ONE: &str = "partition a\n memory 8M\n device 00:04.0\n";

/// See the module comment.
pub fn background(ctx: &mut TestContext<'_>) -> TestResult {
    let platform = &mut *ctx.platform;
    let result = match platform.iommu.units {
        Units::Vtd(_) => vtd(platform),
        Units::Amd(_) => amd(platform),
        Units::None => Err("needs an IOMMU".into()),
    };
    for e in &platform.edus {
        e.set_bus_master(true);
    }
    result
}

/// Records from `rid` a drain finds now.
fn left_behind(platform: &mut Platform, rid: u16) -> u64 {
    let mut n = 0;
    kiommu::service_faults(&mut platform.iommu, |e| n += u64::from(e.source_id == rid));
    n
}

/// What one run of a fresh partition showed.
struct Run {
    interrupts: u64,
    drains: u64,
    found: u64,
    lines: u64,
    left: u64,
}

/// Creates the partition, runs its guest once (through the fault service when
/// `serviced`, else plainly), destroys it, and counts.
fn one_run(
    platform: &mut Platform,
    rid: u16,
    serviced: bool,
) -> Result<Run, alloc::string::String> {
    kiommu::service_faults(&mut platform.iommu, |_| {});
    let mut parts = create_all(ONE, platform)?;
    let (drains, lines, irqs) =
        (kiommu::background_drains(), kiommu::lines_logged(), kiommu::fault_interrupts());
    let run = match parts.first_mut() {
        Some(p) if serviced => run_serviced(p, Budget::DEFAULT, &mut platform.iommu),
        Some(p) => p.run(Budget::DEFAULT),
        None => Err(crate::partition::PartitionError::Stopped),
    };
    let now = kiommu::background_drains();
    let counts = Run {
        interrupts: kiommu::fault_interrupts() - irqs,
        drains: now.0 - drains.0,
        found: now.1 - drains.1,
        lines: kiommu::lines_logged() - lines,
        left: left_behind(platform, rid),
    };
    destroy_all(parts, platform);
    let r = run.map_err(|e| format!("{e}"))?;
    ensure!(r.stop == Stop::Done(0), "guest ended with {:?}", r.stop);
    Ok(counts)
}

fn vtd(platform: &mut Platform) -> TestResult {
    crate::partition::svm::enable().map_err(|e| format!("{e}"))?;
    let bdf = Bdf { segment: 0, bus: 0, device: 4, function: 0 };
    let rid = platform.iommu.route(bdf).ok_or("00:04.0 sits behind no IOMMU")?.requester_id;
    let r = one_run(platform, rid, true)?;
    log::info!(
        "fault service: during the run {} fault interrupts, {} drains from them found {} \
         records ({} lines logged, the rest counted by the rate limiter); {} records from \
         {rid:#06x} left for a later caller",
        r.interrupts,
        r.drains,
        r.found,
        r.lines,
        r.left
    );
    ensure!(r.interrupts > 0, "the guest's DMA beyond its memory raised no fault interrupt");
    ensure!(r.drains > 0 && r.found > 0, "nothing drained the fault during the run");
    // Run first in its boot, the rate limiter has room: the line is on the console.
    ensure!(r.lines > 0, "the fault was drained but no line logged (rate limiter full?)");
    ensure!(r.left == 0, "{} fault records were still waiting after the run", r.left);
    // Control: the same guest in a fresh partition, run without the service.
    let c = one_run(platform, rid, false)?;
    log::info!(
        "fault service: control run without it: {} fault interrupts, {} drains, {} records \
         left behind",
        c.interrupts,
        c.drains,
        c.left
    );
    ensure!(c.drains == 0, "control: a drain ran anyway");
    ensure!(c.left > 0, "control: without the service no record waits, so the test cannot fail");
    Ok(())
}

fn amd(platform: &mut Platform) -> TestResult {
    let function = platform
        .pci
        .iter()
        .find(|f| f.class.0 == 0x08 && f.class.1 == 0x06)
        .ok_or("no IOMMU PCI function (class 08/06) enumerated")?;
    let msi = crate::msi::Msi::find(function.config()).ok_or("the IOMMU function has no MSI")?;
    let bdf = function.bdf;
    let raise = |platform: &mut Platform| -> Result<u64, alloc::string::String> {
        let before = kiommu::fault_interrupts();
        let Units::Amd(units) = &mut platform.iommu.units else { return Err("not AMD".into()) };
        let unit = units.first_mut().ok_or("no unit")?;
        ensure!(unit.event_interrupt(), "the boot did not turn the event interrupt on");
        unit.raise_completion_interrupt().map_err(|e| format!("{e}"))?;
        let start = crate::apic::ticks();
        while kiommu::fault_interrupts() == before && crate::apic::ticks() - start < 50 {
            core::hint::spin_loop();
        }
        Ok(kiommu::fault_interrupts() - before)
    };
    kiommu::service_faults(&mut platform.iommu, |_| {});
    let drains = kiommu::background_drains();
    let taken = raise(platform)?;
    ensure!(taken > 0, "the unit's interrupt never arrived through {bdf}'s MSI");
    ensure!(kiommu::signalled(), "the interrupt did not mark the log for draining");
    let drained = kiommu::service_signalled(&mut platform.iommu);
    ensure!(drained.is_some() && kiommu::background_drains().0 == drains.0 + 1, "no drain ran");
    ensure!(!kiommu::signalled(), "still signalled after the drain");
    log::info!(
        "fault service: AMD-Vi interrupt through {bdf}'s MSI taken {taken} time(s), drained \
         the event log ({} events: this QEMU logs none for refused DMA)",
        drained.map_or(0, |s| s.faults)
    );
    // Control: the function's MSI off, the same interrupt raised: nothing arrives.
    msi.set_enabled(false);
    let taken = raise(platform);
    msi.set_enabled(true);
    let taken = taken?;
    log::info!("fault service: control with the MSI disabled: {taken} interrupts");
    ensure!(taken == 0, "control: with the MSI off the interrupt still came, so it proves nothing");
    kiommu::service_faults(&mut platform.iommu, |_| {});
    Ok(())
}
