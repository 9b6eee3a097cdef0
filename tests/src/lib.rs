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

/// Boots `m` under Bochs (`xtask::bochs`) and returns the outcome, its log kept as for
/// [`boot`]. A missing `bochs` fails with the message naming the packages to install.
pub fn boot_bochs(m: &xtask::bochs::BochsMachine) -> Outcome {
    let out = xtask::bochs::run(m, false).unwrap_or_else(|e| panic!("cannot run Bochs: {e}"));
    keep_log(&out);
    out
}

/// Boots `m` and returns the outcome (never echoing; the log is in the outcome). The
/// serial log is also kept, after the run, in `target/test-logs/SUITE/TEST[-N].log`
/// (N counts a test's later boots).
pub fn boot(m: &Machine) -> Outcome {
    let out = xtask::qemu::run(m, false).unwrap_or_else(|e| panic!("cannot run QEMU: {e}"));
    keep_log(&out);
    out
}

fn keep_log(out: &Outcome) {
    // Boots per test in this process: the first overwrites last run's log.
    static BOOTS: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());
    let suite = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.split('-').next().unwrap_or("suite").to_string())
        .unwrap_or_else(|| "suite".into());
    let test = std::thread::current().name().unwrap_or("boot").replace("::", "-");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-logs").join(suite);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let n = {
        let mut boots = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
        match boots.iter_mut().find(|(t, _)| *t == test) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                boots.push((test.clone(), 1));
                1
            }
        }
    };
    let path = match n {
        1 => dir.join(format!("{test}.log")),
        n => dir.join(format!("{test}-{n}.log")),
    };
    let _ =
        std::fs::write(&path, format!("{}\n-- {}, {:.1?}\n", out.log, out.describe(), out.elapsed));
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
