//! Building and booting the hypervisor: shared by `cargo xtask` and the QEMU suites in
//! `tests/`, so both boot the machine exactly the same way.

pub mod build;
pub mod machine_report;
pub mod qemu;
pub mod sysfs;
pub mod tools;
