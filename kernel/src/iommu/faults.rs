//! Fault records (VT-d) and event logs (AMD-Vi): read, decoded in words, counted, and
//! logged through a rate limiter so a fault storm cannot drown the console or stall the
//! hypervisor.
#![deny(unsafe_code)]

use super::{IommuSystem, Units};
use core::sync::atomic::{AtomicU64, Ordering};
use iommu::ratelimit::RateLimiter;
use spin::Mutex;

/// Vector of the IOMMU units' own interrupt: VT-d's fault event, AMD-Vi's event log (and
/// completion) interrupt through the IOMMU's PCI function.
pub const FAULT_VECTOR: u8 = 33;

static FAULT_INTERRUPTS: AtomicU64 = AtomicU64::new(0);
/// [`FAULT_INTERRUPTS`] as the last drain saw it: the records of every interrupt up to
/// this count have been read.
static SERVICED_UP_TO: AtomicU64 = AtomicU64::new(0);
/// Drains started by an interrupt rather than by a caller ([`service_signalled`]).
static BACKGROUND_DRAINS: AtomicU64 = AtomicU64::new(0);
/// Records and events those drains found.
static BACKGROUND_FAULTS: AtomicU64 = AtomicU64::new(0);
static LINES_LOGGED: AtomicU64 = AtomicU64::new(0);
/// At most 10 fault lines per 3000 APIC ticks (about 5 s at 1.6 ms a tick), as Linux's
/// printk rate limit: a storm of one fault per DMA stays a handful of lines.
static LIMITER: Mutex<RateLimiter> = Mutex::new(RateLimiter::new(10, 3000));

/// The units' interrupt only notes that records are waiting; they are read in thread
/// context by [`service_signalled`] (the partition run loop calls it on the exit the
/// interrupt caused) or [`service_faults`] (the unit is not reachable from the handler).
pub fn fault_interrupt() {
    FAULT_INTERRUPTS.fetch_add(1, Ordering::Relaxed);
    crate::apic::eoi();
}

/// Fault-event interrupts taken since boot.
pub fn fault_interrupts() -> u64 {
    FAULT_INTERRUPTS.load(Ordering::Relaxed)
}

/// Whether a unit interrupted since the last drain: records or events are waiting.
pub fn signalled() -> bool {
    FAULT_INTERRUPTS.load(Ordering::Relaxed) != SERVICED_UP_TO.load(Ordering::Relaxed)
}

/// Drains started by a unit's interrupt ([`service_signalled`]) since boot, and the
/// records and events they found.
pub fn background_drains() -> (u64, u64) {
    (BACKGROUND_DRAINS.load(Ordering::Relaxed), BACKGROUND_FAULTS.load(Ordering::Relaxed))
}

/// The service the hypervisor runs all the time, not only when a test asks: when a unit
/// interrupted since the last drain, reads and clears its fault records / event log and
/// logs them through the rate limiter (as [`service_faults`]); otherwise costs one load.
/// Called in thread context, never from the interrupt handler.
pub fn service_signalled(sys: &mut IommuSystem) -> Option<FaultSummary> {
    if !signalled() {
        return None;
    }
    BACKGROUND_DRAINS.fetch_add(1, Ordering::Relaxed);
    let sum = service_faults(sys, |_| {});
    BACKGROUND_FAULTS.fetch_add(sum.faults, Ordering::Relaxed);
    Some(sum)
}

/// Fault and event lines written to the console since boot (the rate limiter's output,
/// for tests that prove a storm cannot drown the console).
pub fn lines_logged() -> u64 {
    LINES_LOGGED.load(Ordering::Relaxed)
}

/// Logs one fault line if the limiter allows it; the first line of a new window first
/// says how many were suppressed in the windows before (one line, not one per pass).
fn log_limited(limiter: &mut RateLimiter, now: u64, line: core::fmt::Arguments<'_>) {
    if !limiter.allow(now) {
        return;
    }
    let suppressed = limiter.take_suppressed();
    if suppressed > 0 {
        LINES_LOGGED.fetch_add(1, Ordering::Relaxed);
        log::warn!("iommu: {suppressed} fault messages suppressed");
    }
    LINES_LOGGED.fetch_add(1, Ordering::Relaxed);
    log::warn!("{line}");
}

/// What one pass over the fault records / event logs found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultSummary {
    /// Records or events read.
    pub faults: u64,
    /// Primary-fault overflows (VT-d) or event-log overflows (AMD-Vi) seen.
    pub overflows: u64,
}

/// Reads and clears every pending fault record and event, logging at most a few per
/// window (the rest are counted and reported as suppressed).
pub fn service_faults(
    sys: &mut IommuSystem,
    mut on_fault: impl FnMut(&FaultEvent),
) -> FaultSummary {
    let mut sum = FaultSummary::default();
    // Everything signalled so far is read by this pass (an interrupt arriving during it
    // leaves `signalled` true for the next one).
    SERVICED_UP_TO.store(FAULT_INTERRUPTS.load(Ordering::Relaxed), Ordering::Relaxed);
    let now = crate::apic::ticks();
    let mut limiter = LIMITER.lock();
    match &mut sys.units {
        Units::None => {}
        Units::Vtd(units) => {
            for (i, u) in units.iter_mut().enumerate() {
                let scan = u.handle_faults(|r| {
                    sum.faults += 1;
                    on_fault(&FaultEvent {
                        unit: i,
                        source_id: r.source,
                        address: r.address,
                        write: !r.is_read,
                        reason: r.reason,
                    });
                    log_limited(
                        &mut limiter,
                        now,
                        format_args!("DMAR: {}", iommu::linux_log::vtd_fault(r)),
                    );
                });
                if scan.overflow {
                    sum.overflows += 1;
                    log_limited(
                        &mut limiter,
                        now,
                        format_args!("DMAR: unit {i}: fault records overflowed; faults were lost"),
                    );
                }
            }
        }
        Units::Amd(units) => {
            for (i, u) in units.iter_mut().enumerate() {
                for e in u.drain_events() {
                    sum.faults += 1;
                    if let Some(f) = FaultEvent::from_amd(i, &e) {
                        on_fault(&f);
                    }
                    log_limited(
                        &mut limiter,
                        now,
                        format_args!(
                            "iommu ivhd{i}: AMD-Vi: {}",
                            iommu::linux_log::amdvi_event(0, &e)
                        ),
                    );
                }
            }
        }
    }
    sum
}

/// One fault, vendor-neutral, for tests and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultEvent {
    /// Unit index.
    pub unit: usize,
    /// Requester id of the faulting DMA.
    pub source_id: u16,
    /// The faulting IOVA (page address on VT-d).
    pub address: u64,
    /// A write (else a read).
    pub write: bool,
    /// VT-d fault reason code (AMD-Vi: the event code).
    pub reason: u8,
}

impl FaultEvent {
    /// The vendor-neutral view of an AMD-Vi IO_PAGE_FAULT (other events have none).
    fn from_amd(unit: usize, e: &iommu::amdvi::Event) -> Option<FaultEvent> {
        match *e {
            iommu::amdvi::Event::IoPageFault { device, address, flags, .. } => Some(FaultEvent {
                unit,
                source_id: device,
                address,
                write: flags.write(),
                reason: e.code(),
            }),
            _ => None,
        }
    }
}
