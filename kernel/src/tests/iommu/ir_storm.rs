//! An interrupt storm from an assigned device cannot starve the host: edu 0's MSI is
//! routed to a partition slot's host vector (as `Partition::attach_device` does), the
//! guest's view of the device is given a vector and MSI enabled through the emulated
//! configuration ports, and the device raises its interrupt 2000 times back to back. The
//! host takes every one at the cost of a counter increment and an EOI, its timer keeps
//! ticking, and the pending interrupts wait for the guest (at most one injection per
//! guest entry); then the routing is removed and the device's interrupts are refused.

use super::interrupt_forgery::observe;
use crate::ensure;
use crate::partition::interrupts::{DeviceInterrupt, CONFIG_ADDRESS, CONFIG_DATA};
use crate::testing::{TestContext, TestResult};

const STORM: u64 = 2000;

/// The storm test (either vendor).
pub fn storm(ctx: &mut TestContext<'_>) -> TestResult {
    let p = &mut *ctx.platform;
    let edu = p.edus.first().ok_or("no edu device")?;
    let route = p.iommu.route(edu.bdf).ok_or("edu behind no IOMMU")?;
    let (mut d, vector) =
        DeviceInterrupt::claim(edu.config()).ok_or("no MSI capability or no free slot")?;
    let routed = match p.iommu.route_interrupt(route, vector) {
        Ok(r) => r,
        Err(e) => {
            d.release();
            return Err(e.into());
        }
    };
    d.install(routed);
    let result = (|| -> TestResult {
        // The guest's view: MSI capability at 0x40, vector 0x50, enabled.
        for (reg, value) in [(0x44u32, 0xFEE0_0000u32), (0x48, 0), (0x4C, 0x50), (0x40, 1 << 16)] {
            d.io_write(CONFIG_ADDRESS, 4, 0x8000_0000 | reg);
            d.io_write(CONFIG_DATA, 4, value);
        }
        ensure!(d.guest_vector() == Some(0x50), "the guest's view did not take vector 0x50");
        let edu = p.edus.get_mut(0).ok_or("no edu device")?;
        let ticks = crate::apic::ticks();
        let t0 = super::tsc();
        for _ in 0..STORM {
            edu.raise_interrupt(1);
            edu.ack_interrupt(1);
        }
        let cycles = super::tsc() - t0;
        // Let the timer run a little: it must still tick after the storm.
        let ticked = crate::apic::wait_until(50, || crate::apic::ticks() > ticks + 5);
        let taken = d.taken();
        ensure!(taken == STORM, "the host took {taken} of {STORM} device interrupts");
        ensure!(ticked, "the host timer stopped ticking during the storm");
        let mut injections = 0;
        while d.next_injection() == Some(0x50) {
            injections += 1;
        }
        ensure!(injections == STORM, "{injections} injections pending for {STORM} interrupts");
        log::info!(
            "storm: {STORM} device interrupts at host vector {vector}: all taken ({} cycles each with the device's MMIO writes), the timer kept ticking, {injections} waiting for the guest one per entry",
            cycles / STORM
        );
        Ok(())
    })();
    let routed = d.release();
    let unrouted = match routed {
        Some(r) => p.iommu.unroute_interrupt(r),
        None => Ok(()),
    };
    result?;
    unrouted?;
    // With the routing gone (and MSI off) nothing arrives.
    let edu = p.edus.get_mut(0).ok_or("no edu device")?;
    let (a, ()) = observe(|| edu.raise_interrupt(1))?;
    edu.ack_interrupt(1);
    ensure!(!a.any(), "after unrouting the device's interrupt still arrives: {a:?}");
    Ok(())
}
