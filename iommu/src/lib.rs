//! IOMMU drivers and everything about them that does not need the machine.
//!
//! `no_std` + `alloc`: the kernel links it for `x86_64-unknown-none`, and the host runs its
//! tests with plain `cargo test`. Hardware is reached only through the narrow traits in
//! [`platform`], so the same code drives real registers and host-side models.
#![cfg_attr(not(any(test, feature = "std")), no_std)]
// No unsafe code at all: hardware is reached only through the `platform` traits, whose
// implementations (MMIO, physical memory) live in the kernel.
#![forbid(unsafe_code)]

extern crate alloc;

pub mod acpi;
pub mod amdvi;
pub mod assign;
pub mod bits;
pub mod completed;
pub mod domain;
pub mod error;
pub mod invalidate;
pub mod linux_log;
#[cfg(any(test, feature = "model"))]
pub mod model;
pub mod pgtable;
pub mod platform;
pub mod ratelimit;
pub mod ring;
pub mod tracker;
pub mod unit;
pub mod vtd;
