//! Helpers for the QEMU suites in `tests/tests/`: build the hypervisor once, boot a
//! machine, and judge what the serial log says.

use std::path::PathBuf;
use std::sync::OnceLock;
pub use xtask::qemu::{Edu, Firmware, Iommu, Machine, Outcome, Verdict};

/// The debug kernel, built once per test binary.
pub fn kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL.get_or_init(|| xtask::build::kernel(false).unwrap_or_else(|e| panic!("{e}"))).clone()
}

/// A q35 machine with `iommu`, running the in-kernel tests named in `tests`.
pub fn machine(iommu: Iommu, tests: &str) -> Machine {
    let mut m = Machine::new(&kernel(), iommu);
    m.cmdline = format!("test={tests}");
    m
}

/// Boots `m` and returns the outcome (never echoing; the log is in the outcome).
pub fn boot(m: &Machine) -> Outcome {
    xtask::qemu::run(m, false).unwrap_or_else(|e| panic!("cannot run QEMU: {e}"))
}

/// Panics with the whole serial log unless the run succeeded with every selected
/// in-kernel test passing.
pub fn assert_passed(out: &Outcome) {
    let host = host_text(&out.log);
    let closing = host.lines().rev().find(|l| l.ends_with(" failed") && l.contains(" passed, "));
    let ok = out.verdict == Verdict::Success
        && closing.is_some_and(|l| l.ends_with(" 0 failed") && !l.starts_with("0 passed"));
    if !ok {
        panic!(
            "run failed: {} (closing line: {:?}) after {:.1?}\n----- serial log -----\n{}\n----------------------",
            out.describe(),
            closing,
            out.elapsed,
            out.log
        );
    }
}

/// Panics with the log unless `line` occurs in it.
pub fn assert_logged(out: &Outcome, line: &str) {
    if !host_text(&out.log).contains(line) {
        panic!("expected `{line}` in the serial log\n----- serial log -----\n{}\n----------------------", out.log);
    }
}

/// The (major, minor) version of the QEMU that produced `out` ("QEMU emulator version
/// 10.0.2 (...)" gives (10, 0)): for expectations about what a QEMU version builds
/// (its ACPI tables), never about what the IOMMU does, which every version must show.
pub fn qemu_version(out: &Outcome) -> (u32, u32) {
    let number = out.qemu_version.trim_start_matches("QEMU emulator version ");
    let mut parts = number.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// What the hypervisor itself wrote: every line with the text a guest logged cut off.
/// The hypervisor prints guest text only after `partition NAME: guest says: "`, escaped
/// so that it can never end the line, so nothing a guest says can satisfy a check.
pub fn host_text(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    for line in log.lines() {
        out.push_str(line.find(GUEST_TEXT).map_or(line, |i| &line[..i + GUEST_TEXT.len()]));
        out.push('\n');
    }
    out
}

/// What precedes a guest's logged text on the console.
pub const GUEST_TEXT: &str = ": guest says: \"";
