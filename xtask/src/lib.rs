//! Building and booting the hypervisor: shared by `cargo xtask` and the QEMU and Bochs
//! suites in `tests/`, so both boot the machine exactly the same way.

pub mod bochs;
pub mod build;
pub mod doc_paths;
pub mod linux_guest;
pub mod machine_report;
pub mod qemu;
pub mod qemu_props;
pub mod qemu_versions;
pub mod sysfs;
pub mod tools;

/// Marks an error message as a usage error (bad command, option or value): `cargo xtask`
/// then prints the command's usage and exits with status 2.
pub const USAGE_MARK: &str = "\u{1}usage\u{1}";

/// `msg` as a usage error (see [`USAGE_MARK`]).
pub fn usage_error(msg: String) -> String {
    format!("{USAGE_MARK}{msg}")
}

/// Whether `msg` came from [`usage_error`].
pub fn is_usage_error(msg: &str) -> bool {
    msg.starts_with(USAGE_MARK)
}
