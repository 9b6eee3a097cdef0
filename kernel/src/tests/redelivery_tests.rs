//! Interrupted event delivery: a guest takes one local APIC timer interrupt on a stack the
//! hypervisor maps only when it is first touched (`partition::demand`), so the CPU's
//! push of the interrupt frame is a nested-paging exit in the middle of the delivery.
//! The vCPU re-injects the event (`vcpu::redelivery`) and the guest's handler runs
//! exactly once. Machine properties relied on, each checked here: the platform's timer
//! fired and handed the guest one interrupt (its count of vectors taken), the one fault
//! on the page happened while an event was being delivered (the backend's
//! EXITINTINFO / IDT-vectoring information), and the guest found the frame's CS on that
//! page. Control (`test-controls` builds): re-injection off, the same run loses the
//! interrupt: handed over, never handled, never EOI'd.
#![deny(unsafe_code)]

use crate::ensure;
use crate::partition::{Budget, Partition, Stop, BUILTIN_GUEST};
use crate::testing::{TestContext, TestResult};
use alloc::format;
use alloc::string::String;
use boot::partition_config::{Backing, GuestPlatformKind, PartitionSpec};
use guest::{check, scenario};

/// What one run of the scenario showed.
struct Seen {
    stop: Stop,
    ticks: u64,
    frame_cs: u64,
    faults: u64,
    during_delivery: u64,
    taken: u64,
    eoi: u64,
}

fn run_scenario(name: &str) -> Result<Seen, String> {
    let mut spec = PartitionSpec::new(name, 4 << 20, Backing::Pages4K);
    spec.platform = GuestPlatformKind::Pc;
    let mut p =
        Partition::create(&spec, BUILTIN_GUEST).map_err(|e| format!("create {name}: {e}"))?;
    p.scenario = scenario::PLATFORM_REDELIVERY;
    let seen = p
        .add_demand_page(guest::DEMAND_PAGE)
        .map_err(|e| format!("demand page: {e}"))
        .and_then(|()| p.run(Budget::DEFAULT).map_err(|e| format!("run {name}: {e}")))
        .and_then(|r| {
            let d = p.demand_page().ok_or("no demand page")?;
            let plat = p.platform.as_ref().ok_or("no platform")?;
            Ok(Seen {
                stop: r.stop,
                ticks: p.reported(check::REDELIVERY_TICKS).unwrap_or(u64::MAX),
                frame_cs: p.reported(check::REDELIVERY_FRAME_CS).unwrap_or(u64::MAX),
                faults: d.faults,
                during_delivery: d.during_delivery,
                taken: plat.stats.lapic_taken,
                eoi: plat.lapic.counts.eoi,
            })
        });
    p.destroy();
    let s = seen?;
    log::info!(
        "redelivery: partition {name} ({}): {:?}; handler ran {} times, frame CS {:#x}; demand page: {} faults, {} during an event's delivery; platform: {} APIC vectors taken, {} EOIs",
        crate::partition::backend::Backend::detect().map_or("?", |b| b.name()),
        s.stop,
        s.ticks,
        s.frame_cs,
        s.faults,
        s.during_delivery,
        s.taken,
        s.eoi
    );
    Ok(s)
}

/// The interrupt whose delivery exited arrives exactly once.
pub fn redelivered(_: &mut TestContext<'_>) -> TestResult {
    let s = run_scenario("redeliver")?;
    ensure!(matches!(s.stop, Stop::Done(_)), "the guest ended with {:?}", s.stop);
    ensure!(s.taken == 1, "the platform handed over {} timer interrupts, not one", s.taken);
    ensure!(
        s.faults == 1 && s.during_delivery == 1,
        "{} faults on the demand page, {} during an event's delivery: the scenario did not interrupt a delivery",
        s.faults,
        s.during_delivery
    );
    ensure!(s.frame_cs == 0x08, "the interrupt frame's CS on the demand page is {:#x}", s.frame_cs);
    ensure!(s.ticks == 1, "the handler ran {} times for one interrupt", s.ticks);
    ensure!(s.eoi == 1, "{} EOIs for one interrupt", s.eoi);
    ensure!(s.stop == Stop::Done(0), "the guest's own checks failed: {:?}", s.stop);
    Ok(())
}

/// Control: re-injection off (the test knob), the interrupt the platform handed over is
/// lost: the handler never runs and nothing is EOI'd, so `redelivered` can fail.
#[cfg(feature = "test-controls")]
pub fn control(_: &mut TestContext<'_>) -> TestResult {
    crate::partition::vcpu::set_redelivery_for_test(false);
    let s = run_scenario("lose");
    crate::partition::vcpu::set_redelivery_for_test(true);
    let s = s?;
    ensure!(matches!(s.stop, Stop::Done(_)), "the guest ended with {:?}", s.stop);
    ensure!(
        s.taken == 1 && s.during_delivery == 1,
        "control: {} interrupts handed over, {} faults during a delivery: it shows nothing",
        s.taken,
        s.during_delivery
    );
    ensure!(
        s.ticks == 0 && s.eoi == 0,
        "without re-injection the handler still ran {} times ({} EOIs)",
        s.ticks,
        s.eoi
    );
    Ok(())
}

/// Without the `test-controls` feature there is no knob: the control cannot run.
#[cfg(not(feature = "test-controls"))]
pub fn control(_: &mut TestContext<'_>) -> TestResult {
    Err("this kernel was built without its test controls (a --release build): the knob that turns re-injection off is not in it; run the debug build".into())
}
