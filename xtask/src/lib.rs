//! Building and booting the hypervisor: shared by `cargo xtask` and the QEMU suites in
//! `tests/`, so both boot the machine exactly the same way.

pub mod build;
pub mod qemu;
pub mod qemu_props;
pub mod qemu_versions;
pub mod tools;
