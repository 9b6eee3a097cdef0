//! Drivers the hypervisor itself uses for devices it assigns: only what it needs to take
//! a device from one owner to the next (quiesce) and to prove, in its own tests, where
//! the device's DMA goes. The owners' own drivers (Linux's) do the rest.

pub mod nvme;
