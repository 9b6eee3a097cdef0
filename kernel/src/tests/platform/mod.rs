//! The guest platform (`partition::platform`): its devices driven by hand, the MMIO
//! decoder, and the guest program taking real timer interrupts through it.

pub mod decoder;
pub mod devices;
pub mod guests;
pub mod walk;
