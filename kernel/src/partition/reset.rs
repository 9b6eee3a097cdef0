//! Devices change owners clean: when a partition lets a device go (destroy), the device
//! is reset with the best method it offers, and a device that offers none is marked as
//! possibly holding its last owner's data. Such a device goes only to a partition of the
//! same name (the same configured owner, re-created) or to one whose configuration says
//! `unreset-devices allow`; every other assignment is refused.
//!
//! Methods, best first (Linux's `pci_reset_function` order without the ACPI and
//! device-specific ones): PCI Express function-level reset (Device Capabilities bit 28),
//! Advanced Features FLR (capability 0x13), and a D3hot -> D0 power-state cycle when the
//! PM capability does not set No_Soft_Reset. A secondary bus reset is not used: it
//! would reset every function below the bridge, and on the machines tested here devices
//! sit on the root bus (QEMU q35's edu at 00:04.0 and 00:05.0).
//!
//! QEMU's edu offers none of them (a conventional PCI function with only an MSI
//! capability and no reset handler, so even a bus reset would keep its DMA buffer):
//! see `docs/partitions.md`. QEMU's NVMe controller offers FLR (and a PM capability
//! with No_Soft_Reset set, so no power-state reset) on 7.2 and 10.0.
//!
//! The whole release, in order: [`quiesce`] (the device's own way, from the table in
//! `reset/quiesce.rs`, while the owner's IOMMU domain still maps its memory; then bus
//! mastering off; then drained), the device blocked on its unit, the owner's mappings
//! torn down and invalidated, and only then [`released`]: the reset here.
#![deny(unsafe_code)]

mod quiesce;
pub use quiesce::{last_report, quiesce};

use crate::pci::{Bdf, ConfigSpace, PciFunction};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// How a device was (or can be) reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetMethod {
    /// PCI Express function-level reset.
    Flr,
    /// Advanced Features function-level reset.
    AfFlr,
    /// D3hot -> D0 (PM capability, No_Soft_Reset clear).
    PowerState,
    /// The device offers no reset.
    None,
}

impl fmt::Display for ResetMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResetMethod::Flr => "function-level reset (PCIe)",
            ResetMethod::AfFlr => "function-level reset (Advanced Features)",
            ResetMethod::PowerState => "D3hot -> D0 power-state reset",
            ResetMethod::None => "no reset (no FLR, no AF FLR, no PM soft reset)",
        })
    }
}

/// Why a reset was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetError {
    /// The device offers no reset method.
    NoMethod,
    /// The capability the method needs was there when chosen and is gone now.
    CapabilityVanished(&'static str),
    /// The device reads as absent after the reset.
    DidNotComeBack,
}

impl fmt::Display for ResetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetError::NoMethod => f.write_str("it offers no FLR, no AF FLR and no PM soft reset"),
            ResetError::CapabilityVanished(cap) => write!(f, "the {cap} capability vanished"),
            ResetError::DidNotComeBack => f.write_str("the device did not come back from reset"),
        }
    }
}

const CAP_PM: u8 = 0x01;
const CAP_PCIE: u8 = 0x10;
const CAP_AF: u8 = 0x13;
/// Capabilities walked at most (a looping list in a hostile device cannot hang us).
const MAX_CAPS: usize = 48;

fn read8(c: &ConfigSpace, off: u16) -> u8 {
    (c.read32(off) >> ((off & 3) * 8)) as u8
}

fn read16(c: &ConfigSpace, off: u16) -> u16 {
    (c.read32(off) >> ((off & 2) * 8)) as u16
}

/// The offset of capability `id`, if the function lists it.
fn find_cap(c: &ConfigSpace, id: u8) -> Option<u16> {
    if read16(c, 0x06) & 0x10 == 0 {
        return None;
    }
    let mut at = read8(c, 0x34) & 0xFC;
    for _ in 0..MAX_CAPS {
        if at < 0x40 {
            return None;
        }
        if read8(c, at as u16) == id {
            return Some(at as u16);
        }
        at = read8(c, at as u16 + 1) & 0xFC;
    }
    None
}

/// The best reset `f` offers.
pub fn method(f: &PciFunction) -> ResetMethod {
    let c = f.config();
    if find_cap(&c, CAP_PCIE).is_some_and(|p| c.read32(p + 4) & 1 << 28 != 0) {
        return ResetMethod::Flr;
    }
    if find_cap(&c, CAP_AF).is_some_and(|p| read8(&c, p + 3) & 0x3 == 0x3) {
        return ResetMethod::AfFlr;
    }
    if find_cap(&c, CAP_PM).is_some_and(|p| c.read32(p + 4) & 1 << 3 == 0) {
        return ResetMethod::PowerState;
    }
    ResetMethod::None
}

/// Every reset `f` offers, in words (the capabilities behind [`method`]'s choice), for
/// the logs: PCIe FLR, AF FLR, and the PM capability with its No_Soft_Reset bit.
pub fn offered(f: &PciFunction) -> String {
    let c = f.config();
    let flr = find_cap(&c, CAP_PCIE).map(|p| c.read32(p + 4) & 1 << 28 != 0);
    let af = find_cap(&c, CAP_AF).map(|p| read8(&c, p + 3) & 0x3 == 0x3);
    let pm = find_cap(&c, CAP_PM).map(|p| c.read32(p + 4) & 1 << 3 != 0);
    let yes = |b: bool| if b { "yes" } else { "no" };
    alloc::format!(
        "PCIe capability {} (FLR {}), AF capability {} (FLR {}), PM capability {} (No_Soft_Reset {})",
        yes(flr.is_some()),
        yes(flr == Some(true)),
        yes(af.is_some()),
        yes(af == Some(true)),
        yes(pm.is_some()),
        yes(pm == Some(true)),
    )
}

/// Waits at least `ms` milliseconds: `ms` host timer ticks, each 1.6 ms under QEMU and
/// longer with the slower APIC clocks of real machines (bounded by `wait_until`).
fn wait_ms(ms: u64) {
    crate::apic::wait_until(ms, || false);
}

/// Resets `f` with `m` (100 ms after an FLR, 10 ms per power-state change, as PCIe asks)
/// and puts its BARs and command register back.
fn perform(f: &PciFunction, m: ResetMethod) -> Result<(), ResetError> {
    let c = f.config();
    let header: Vec<u32> = (0..16).map(|i| c.read32(i * 4)).collect();
    match m {
        ResetMethod::Flr => {
            let p = find_cap(&c, CAP_PCIE).ok_or(ResetError::CapabilityVanished("PCIe"))?;
            let ctl = read16(&c, p + 8);
            c.write16(p + 8, ctl | 1 << 15);
            wait_ms(100);
        }
        ResetMethod::AfFlr => {
            let p = find_cap(&c, CAP_AF).ok_or(ResetError::CapabilityVanished("AF"))?;
            let ctl = c.read32(p + 4);
            c.write32(p + 4, ctl & !0xFF | 1);
            wait_ms(100);
        }
        ResetMethod::PowerState => {
            let p = find_cap(&c, CAP_PM).ok_or(ResetError::CapabilityVanished("PM"))?;
            let csr = read16(&c, p + 4);
            c.write16(p + 4, csr | 3);
            wait_ms(10);
            c.write16(p + 4, csr & !3);
            wait_ms(10);
        }
        ResetMethod::None => {
            return Err(ResetError::NoMethod);
        }
    }
    if c.read32(0) == u32::MAX {
        return Err(ResetError::DidNotComeBack);
    }
    // BARs (0x10-0x24) and the command register, as before (bus mastering stays off).
    for i in 4..10 {
        c.write32(i * 4, header[i as usize]);
    }
    c.write16(4, header[1] as u16 & !0x4);
    Ok(())
}

/// Devices that could not be reset, with the partition that last owned each.
static UNRESET: spin::Mutex<Vec<(Bdf, String)>> = spin::Mutex::new(Vec::new());

/// Called when `owner` lets `f` go (its DMA blocked): resets it with the best method it
/// offers, or records that it could not be reset. Logs the choice either way.
pub fn released(f: &PciFunction, owner: &str) -> ResetMethod {
    let m = method(f);
    let mut unreset = UNRESET.lock();
    unreset.retain(|(b, _)| *b != f.bdf);
    match perform(f, m) {
        Ok(()) => {
            log::info!("partition {owner}: {} reset by {m} before it changes owner", f.bdf);
            m
        }
        Err(e) => {
            // A method that failed is named; "no method" says it all.
            let how =
                if e == ResetError::NoMethod { String::new() } else { alloc::format!("{m}: ") };
            log::warn!(
                "partition {owner}: {} not reset ({how}{e}): it may hold {owner}'s data, so it goes only to {owner} again or to a partition with `unreset-devices allow`",
                f.bdf
            );
            unreset.push((f.bdf, owner.into()));
            ResetMethod::None
        }
    }
}

/// A device refused to a partition: it could not be reset after another one owned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReset {
    /// The device.
    pub device: Bdf,
    /// The partition that owned it last.
    pub owner: String,
    /// The partition that asked for it.
    pub to: String,
}

impl fmt::Display for NotReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} could not be reset after partition {} owned it and may still hold its data; \
             refused (`unreset-devices allow` in {}'s configuration would accept it)",
            self.device, self.owner, self.to
        )
    }
}

/// Whether partition `to` may be given `bdf`: always, unless the device could not be
/// reset after another partition owned it and `to` does not accept that.
pub fn may_assign(bdf: Bdf, to: &str, accept_unreset: bool) -> Result<(), NotReset> {
    let unreset = UNRESET.lock();
    let Some((_, owner)) = unreset.iter().find(|(b, _)| *b == bdf) else {
        return Ok(());
    };
    if owner == to {
        return Ok(());
    }
    if accept_unreset {
        log::warn!(
            "partition {to}: gets {bdf}, which could not be reset after {owner} owned it (`unreset-devices allow`)"
        );
        return Ok(());
    }
    Err(NotReset { device: bdf, owner: owner.clone(), to: to.into() })
}
