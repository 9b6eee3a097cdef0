//! The first step of letting a device go: quiesce it the way its kind of device wants,
//! while its IOMMU domain still maps the owner's memory (so whatever it still writes
//! lands there, in memory that is scrubbed before anyone else gets it), then turn its
//! bus mastering off. The device-specific part is one table, [`QUIESCE`]; a device no
//! row names gets bus mastering off alone. Afterwards the partition teardown blocks the
//! device on its unit, tears the mappings down and resets it (`super::released`).
//!
//! Why each row does what it does:
//! - NVMe (class 01:08:02): Linux's `nvme_dev_disable` disables the controller (CC) before
//!   `pci_disable_device` clears bus mastering, and its reset quirk for NVMe
//!   (`nvme_disable_and_flr`) clears CC.EN and waits for CSTS.RDY = 0, bounded by CAP.TO,
//!   before the FLR. Here a controller that is live (CSTS.RDY = 1, no fatal status) is
//!   first shut down normally (CC.SHN = 01b, CSTS.SHST = complete), which Linux's quirk
//!   skips because the completions could reach its own admin queue: here they can only
//!   reach the departed owner's queues, and the shutdown flushes the owner's writes from
//!   the controller's volatile cache, which nobody else would do. Then CC.EN = 0 and
//!   CSTS.RDY = 0 within CAP.TO: a controller in reset holds no queues and issues no DMA.
//!   Only then bus mastering off.
//! - QEMU's edu (1234:11e8): bus mastering off, then its DMA engine's busy bit polled
//!   until clear (bounded), as its DMA runs on a timer after the command.
#![deny(unsafe_code)]

use crate::devices::nvme::{self, Controller, NvmeError};
use crate::pci::{Bdf, PciFunction};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Timer ticks (about 1.6 ms each) edu may take to finish in-flight DMA.
const EDU_DRAIN_TICKS: u64 = 300;

/// One quiesce step: what it did in words, or why it failed.
pub type Step = fn(&PciFunction) -> Result<String, QuiesceError>;

/// What one kind of device gets before and after its bus mastering goes off.
pub struct Quiescer {
    /// The row's name, for the logs.
    pub name: &'static str,
    /// Whether the row is for `f`.
    pub matches: fn(&PciFunction) -> bool,
    /// Run while bus mastering is still on (and the owner's domain still attached).
    pub before_bus_master_off: Option<Step>,
    /// Run once bus mastering is off: wait until the device is idle.
    pub after_bus_master_off: Option<Step>,
}

/// The device-specific quiesce table (docs/partitions.md shows it too).
pub static QUIESCE: &[Quiescer] = &[
    Quiescer {
        name: "nvme",
        matches: |f| f.class == nvme::CLASS,
        before_bus_master_off: Some(nvme_quiesce),
        after_bus_master_off: None,
    },
    Quiescer {
        name: "edu",
        matches: |f| (f.vendor, f.device) == crate::edu::PCI_ID,
        before_bus_master_off: None,
        after_bus_master_off: Some(edu_drain),
    },
];

/// Why a device did not go quiet as its row asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuiesceError {
    /// The NVMe controller could not be reached or disabled in time.
    Nvme(NvmeError),
    /// edu's DMA engine was still busy after this many ticks.
    DrainTimeout(u64),
}

impl fmt::Display for QuiesceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuiesceError::Nvme(e) => write!(f, "NVMe: {e}"),
            QuiesceError::DrainTimeout(t) => {
                write!(f, "DMA still busy after {t} ticks with bus mastering off")
            }
        }
    }
}

impl From<NvmeError> for QuiesceError {
    fn from(e: NvmeError) -> Self {
        QuiesceError::Nvme(e)
    }
}

/// What [`quiesce`] did to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuiesceReport {
    /// The table row used, or `"generic"` when none matched.
    pub driver: &'static str,
    /// The step before bus mastering went off, if the row has one.
    pub before: Option<Result<String, QuiesceError>>,
    /// Whether the command register read bus mastering off afterwards.
    pub bus_master_off: bool,
    /// The step after, if the row has one.
    pub after: Option<Result<String, QuiesceError>>,
}

impl QuiesceReport {
    /// Whether every step succeeded.
    pub fn ok(&self) -> bool {
        self.bus_master_off
            && !matches!(self.before, Some(Err(_)))
            && !matches!(self.after, Some(Err(_)))
    }
}

/// The last report per device, for the tests that check the release order from inside.
static LAST: spin::Mutex<Vec<(Bdf, QuiesceReport)>> = spin::Mutex::new(Vec::new());

/// Quiesces `f` before its owner lets it go: its row's first step, bus mastering off, its
/// row's second step; logs and records what happened. A failed step is reported and the
/// release goes on (the device is blocked and reset regardless).
pub fn quiesce(f: &PciFunction) -> QuiesceReport {
    let row = QUIESCE.iter().find(|q| (q.matches)(f));
    let before = row.and_then(|q| q.before_bus_master_off).map(|step| step(f));
    let c = f.config();
    c.set_bus_master(false);
    let bus_master_off = c.read32(4) & 0x4 == 0;
    let after = row.and_then(|q| q.after_bus_master_off).map(|step| step(f));
    let report =
        QuiesceReport { driver: row.map_or("generic", |q| q.name), before, bus_master_off, after };
    let step = |s: &Option<Result<String, QuiesceError>>| match s {
        None => String::from("-"),
        Some(Ok(s)) => s.clone(),
        Some(Err(e)) => format!("FAILED: {e}"),
    };
    let line = format!(
        "reset: {} quiesced ({}): {}; bus mastering {}; {}",
        f.bdf,
        report.driver,
        step(&report.before),
        if bus_master_off { "off" } else { "still on" },
        step(&report.after)
    );
    if report.ok() {
        log::info!("{line}");
    } else {
        log::warn!("{line}");
    }
    let mut last = LAST.lock();
    last.retain(|(b, _)| *b != f.bdf);
    last.push((f.bdf, report.clone()));
    report
}

/// The report of the last [`quiesce`] of `bdf`.
pub fn last_report(bdf: Bdf) -> Option<QuiesceReport> {
    LAST.lock().iter().find(|(b, _)| *b == bdf).map(|(_, r)| r.clone())
}

/// The NVMe row's first step: memory decoding on (to reach the registers, as Linux's
/// quirk does), a normal shutdown when the controller is live, then disable.
fn nvme_quiesce(f: &PciFunction) -> Result<String, QuiesceError> {
    let c = f.config();
    let cmd = c.read32(4) as u16;
    if cmd & 0x2 == 0 {
        c.write16(4, cmd | 0x2);
    }
    let mut ctrl = Controller::open(f)?;
    let (cc, csts) = (ctrl.cc(), ctrl.csts());
    if csts == u32::MAX {
        return Err(NvmeError::NotResponding.into());
    }
    let mut done = format!("found CC {cc:#x} CSTS {csts:#x}");
    if ctrl.ready() && !ctrl.fatal() && !ctrl.shutdown_complete() {
        match ctrl.shutdown() {
            Ok(()) => done.push_str(", shut down (CC.SHN normal, CSTS.SHST complete)"),
            // The disable below still stops it; the shutdown's failure is reported.
            Err(e) => done.push_str(&format!(", shutdown failed ({e})")),
        }
    }
    if ctrl.enabled() || ctrl.ready() {
        ctrl.disable()?;
        done.push_str(&format!(
            ", disabled (CC.EN=0, CSTS.RDY=0 within {} ms)",
            ctrl.ready_timeout_ms()
        ));
    } else {
        done.push_str(", already disabled");
    }
    done.push_str(&format!(", CSTS now {:#x}", ctrl.csts()));
    Ok(done)
}

/// The edu row's second step: its DMA engine idle.
fn edu_drain(f: &PciFunction) -> Result<String, QuiesceError> {
    match crate::edu::drain(f, EDU_DRAIN_TICKS) {
        Some(false) => Err(QuiesceError::DrainTimeout(EDU_DRAIN_TICKS)),
        _ => Ok(String::from("DMA engine idle")),
    }
}
