//! Host tests of the VT-d driver against a register model and model memory.

mod memory;
mod model;

mod enable;
mod faults;
mod handoff;
mod invalidation;
mod irq_remap;
mod tables;

use memory::SharedMemory;
use model::{ModelMmio, VtdModel};

use crate::vtd::VtdUnit;

/// A driver, the test's handle on its register model, and the shared memory.
pub(crate) struct Bench {
    pub unit: VtdUnit<ModelMmio, SharedMemory>,
    pub hw: ModelMmio,
    pub mem: SharedMemory,
}

/// A unit with the given CAP/ECAP over fresh model memory (not yet enabled).
pub(crate) fn bench(cap: u64, ecap: u64) -> Bench {
    let mem = SharedMemory::new();
    let hw = VtdModel::shared(cap, ecap, mem.clone());
    let unit = VtdUnit::new(hw.clone(), mem.clone()).expect("unit constructs");
    Bench { unit, hw, mem }
}

/// QEMU's default unit, enabled.
pub(crate) fn qemu_enabled() -> Bench {
    let mut b = bench(model::QEMU_CAP, model::QEMU_ECAP);
    b.unit.enable().expect("enable");
    b
}
