//! `cargo xtask test` (every test) and `cargo xtask lint`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Passed and failed counts summed over every `test result:` line cargo printed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
}

impl Totals {
    /// Adds the counts of one `test result: ok. 12 passed; 0 failed; ...` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else { continue };
            let n: u64 = n.parse().unwrap_or(0);
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Runs a cargo test command, echoing its output and counting its results.
fn cargo_test(args: &[&str], totals: &mut Totals) -> Result<(), String> {
    cargo_test_env(args, None, totals)
}

/// As [`cargo_test`], with `$QEMU` set to `qemu` for the child when given.
fn cargo_test_env(
    args: &[&str],
    qemu: Option<&xtask::qemu_versions::Qemu>,
    totals: &mut Totals,
) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("xtask: cargo {}", args.join(" "));
    let mut cmd = Command::new(cargo);
    if let Some(q) = qemu {
        cmd.env("QEMU", &q.binary);
    }
    let mut child = cmd
        .current_dir(xtask::build::workspace_root())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("{line}");
            totals.add_line(&line);
        }
    }
    let ok = child.wait().map_err(|e| e.to_string())?.success();
    if ok {
        Ok(())
    } else {
        println!("xtask: {} passed, {} failed", totals.passed, totals.failed.max(1));
        Err(format!("`cargo {}` failed", args.join(" ")))
    }
}

/// The QEMU suites with `$QEMU` pointing at `q`.
fn cargo_test_with_qemu(q: &xtask::qemu_versions::Qemu, totals: &mut Totals) -> Result<(), String> {
    // The suites' harness reads `$QEMU` (xtask::tools::qemu_binary); set for the child only.
    // The Bochs suite runs once, not per QEMU version (`bochs_suite`).
    cargo_test_env(
        &["test", "--package", "tests", "--", "--test-threads=2", "--skip", "bochs_"],
        Some(q),
        totals,
    )
}

/// The Bochs suite (`tests/tests/bochs.rs`: VMX on two Intel models, SVM on `ryzen`),
/// once: it does not depend on the QEMU version.
fn bochs_suite(totals: &mut Totals) -> Result<(), String> {
    cargo_test(&["test", "--package", "tests", "--test", "bochs", "--", "--test-threads=2"], totals)
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("xtask: cargo {}", args.join(" "));
    let ok = Command::new(cargo)
        .current_dir(xtask::build::workspace_root())
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?
        .success();
    if ok {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed", args.join(" ")))
    }
}

/// Host tests first (fast, no QEMU), then the QEMU suites, which boot real machines.
pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(a) = args.first() {
        return Err(xtask::usage_error(format!("`test` takes no options (got `{a}`)")));
    }
    xtask::tools::ensure_rust_target()?;
    let mut tools = vec![&xtask::tools::QEMU, &xtask::tools::OVMF, &xtask::bochs::BOCHS];
    tools.extend(xtask::tools::GRUB.iter());
    tools.extend(xtask::bochs::BOCHS_FILES.iter());
    xtask::tools::ensure(&tools)?;
    // fmt and clippy first: CI runs this command, so it enforces them.
    lint()?;
    xtask::build::kernel(false)?;
    let mut totals = Totals::default();
    cargo_test(&["test", "--workspace", "--exclude", "tests"], &mut totals)?;
    // A short libFuzzer run of every fuzz target (stable toolchain, seeds committed).
    crate::fuzz::fuzz(crate::fuzz::SMOKE_RUNS, 20, &[])?;
    // The QEMU suites once per QEMU version: emulator defaults differ between versions,
    // and the harness states every property the suites rely on, so each must pass on each.
    let qemus = xtask::qemu_versions::suite_qemus()?;
    // The Linux suite's guest (Debian's packages, cached), fetched once before the suites.
    xtask::linux_guest::ensure()?;
    let mut per_version = Vec::new();
    for q in &qemus {
        println!("xtask: QEMU suites on {} ({})", q.version, q.binary.display());
        let before = totals;
        let start = std::time::Instant::now();
        let ran = cargo_test_with_qemu(q, &mut totals);
        per_version.push(format!(
            "{}: {} passed, {} failed in {:.0?}",
            q.version,
            totals.passed - before.passed,
            totals.failed - before.failed,
            start.elapsed()
        ));
        ran?;
    }
    println!("xtask: Bochs suite (VMX and SVM partitions)");
    let before = totals;
    let start = std::time::Instant::now();
    let ran = bochs_suite(&mut totals);
    per_version.push(format!(
        "Bochs 2.7: {} passed, {} failed in {:.0?}",
        totals.passed - before.passed,
        totals.failed - before.failed,
        start.elapsed()
    ));
    ran?;
    for line in &per_version {
        println!("xtask: {line}");
    }
    // One closing line over every suite, for people and CI alike.
    println!("xtask: {} passed, {} failed", totals.passed, totals.failed);
    if totals.passed == 0 {
        return Err("no test ran".into());
    }
    Ok(())
}

/// rustfmt check, clippy on the host crates and clippy on the kernel for its target.
pub fn lint() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    // The kernel as released and as the QEMU suites boot it (with its test controls).
    for features in [&[][..], &["--features", "test-controls"]] {
        let mut args = vec!["clippy", "--package", "kernel", "--target", xtask::build::TARGET];
        args.extend_from_slice(features);
        args.extend_from_slice(&["--", "-D", "warnings"]);
        cargo(&args)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_cargo_result_lines() {
        let mut t = Totals::default();
        t.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s");
        t.add_line(
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        t.add_line("running 5 tests");
        assert_eq!(t, Totals { passed: 15, failed: 2 });
    }
}
