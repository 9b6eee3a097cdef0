//! Why the kernel's IOMMU layer refused or failed, typed up to where it is printed (each
//! says what happened in words through `Display`).
#![deny(unsafe_code)]

use alloc::string::String;
use core::fmt;
use iommu::error::HwError;

/// Why no domain id could be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainIdError {
    /// There is no unit with this index.
    NoSuchUnit(usize),
    /// Every id the unit supports is live (id 0 is reserved).
    Exhausted {
        /// The unit.
        unit: usize,
        /// How many ids it has for domains.
        usable: u32,
    },
}

impl fmt::Display for DomainIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainIdError::NoSuchUnit(unit) => {
                write!(f, "domain ids: there is no IOMMU unit {unit}")
            }
            DomainIdError::Exhausted { unit, usable } => write!(
                f,
                "domain ids: all {usable} ids of IOMMU unit {unit} are in use (id 0 is reserved)"
            ),
        }
    }
}

/// A device may not be assigned: its unit does not remap interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptsNotIsolated {
    /// The unit.
    pub unit: usize,
    /// Why the unit does not remap interrupts, as bring-up found it.
    pub why: String,
}

impl fmt::Display for InterruptsNotIsolated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IOMMU unit {} cannot remap interrupts ({}), so the device could forge any \
             interrupt (any vector, NMI, INIT) on the host; refused (the unsafe switch \
             allow-unsafe-interrupts would allow it)",
            self.unit, self.why
        )
    }
}

/// Why a device's interrupt could not be routed (or unrouted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// The machine has no IOMMU to remap the device's interrupts.
    NoIommu,
    /// The route names a unit that was not brought up.
    NoSuchUnit(usize),
    /// AMD-Vi remapping entries take 8-bit APIC ids; this CPU's is wider.
    ApicIdTooWide(u32),
    /// The unit failed to install or remove the entry.
    Hw(HwError),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NoIommu => f.write_str("no IOMMU remaps this device's interrupts"),
            RouteError::NoSuchUnit(u) => write!(f, "no IOMMU unit {u} to route the interrupt"),
            RouteError::ApicIdTooWide(id) => {
                write!(f, "interrupt routing: APIC id {id} does not fit an AMD-Vi entry (8 bits)")
            }
            RouteError::Hw(e) => {
                write!(f, "the IOMMU failed to change the device's interrupt entry: {e}")
            }
        }
    }
}

impl From<HwError> for RouteError {
    fn from(e: HwError) -> Self {
        RouteError::Hw(e)
    }
}

/// The in-kernel tests and the narrative code report failures as text: these errors become
/// their words there, where they are printed.
macro_rules! into_text {
    ($($t:ty),*) => {$(
        impl From<$t> for String {
            fn from(e: $t) -> String {
                alloc::string::ToString::to_string(&e)
            }
        }
    )*};
}

into_text!(DomainIdError, InterruptsNotIsolated, RouteError);
