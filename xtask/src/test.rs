//! `cargo xtask test` (every test) and `cargo xtask lint`.

use std::process::Command;

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
        return Err(format!("`test` takes no options (got `{a}`)"));
    }
    xtask::tools::ensure_rust_target()?;
    let mut tools = vec![&xtask::tools::QEMU, &xtask::tools::OVMF];
    tools.extend(xtask::tools::GRUB.iter());
    xtask::tools::ensure(&tools)?;
    xtask::build::kernel(false)?;
    cargo(&["test", "--workspace", "--exclude", "tests"])?;
    cargo(&["test", "--package", "tests", "--", "--test-threads=2"])?;
    println!("xtask: every test passed");
    Ok(())
}

/// rustfmt check, clippy on the host crates and clippy on the kernel for its target.
pub fn lint() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    cargo(&[
        "clippy",
        "--package",
        "kernel",
        "--target",
        xtask::build::TARGET,
        "--",
        "-D",
        "warnings",
    ])
}
