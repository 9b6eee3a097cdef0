//! `cargo xtask fuzz`: builds the cargo-fuzz crates (`iommu/fuzz`, `boot/fuzz`) with
//! libFuzzer on the toolchain at hand (stable works: the coverage instrumentation is
//! `-C passes=sancov-module` and `-C llvm-args`, both stable; only sanitizers need
//! nightly, and the fuzzed code is safe Rust) and runs every target from its seed corpus
//! for a bounded number of inputs. `cargo xtask test` runs the short version, so CI does.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The instrumentation cargo-fuzz uses with `-s none`, plus debug assertions and
/// overflow checks so an arithmetic overflow is a crash too.
const RUSTFLAGS: &str = "--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks";

/// Host triple the targets are built for (an explicit `--target` keeps RUSTFLAGS off
/// build scripts, which must not be instrumented).
const HOST: &str = "x86_64-unknown-linux-gnu";

/// The C++ compiler libfuzzer-sys builds libFuzzer with.
const CXX: xtask::tools::Tool = xtask::tools::Tool { name: "c++", packages: &["g++"] };

/// One fuzz crate and its targets, each with where its seeds come from.
struct Crate {
    dir: &'static str,
    targets: &'static [(&'static str, &'static str)],
}

const CRATES: &[Crate] = &[
    Crate {
        dir: "iommu/fuzz",
        targets: &[("dmar", "iommu/testdata/dmar"), ("ivrs", "iommu/testdata/ivrs")],
    },
    Crate {
        dir: "boot/fuzz",
        targets: &[
            ("partition_config", "boot/fuzz/corpus/partition_config"),
            ("cmdline", "boot/fuzz/corpus/cmdline"),
            ("boot_info", "boot/fuzz/corpus/boot_info"),
            ("guest_elf", "boot/fuzz/corpus/guest_elf"),
            ("linux_boot", "boot/fuzz/corpus/linux_boot"),
            ("vm_exit", "boot/fuzz/corpus/vm_exit"),
            ("hypercall", "boot/fuzz/corpus/hypercall"),
        ],
    },
];

/// Inputs per target in the short run, and its time cap in seconds.
pub const SMOKE_RUNS: u64 = 50_000;
const SMOKE_SECONDS: u64 = 20;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// `cargo xtask fuzz [--runs N] [--seconds S] [TARGET...]`.
pub fn run(args: &[String]) -> Result<(), String> {
    let (mut runs, mut seconds, mut only) = (SMOKE_RUNS, SMOKE_SECONDS, Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |what: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{a} needs {what}"))?;
            v.parse().map_err(|_| format!("{a} takes a number, not `{v}`"))
        };
        match a.as_str() {
            "--runs" => runs = number("a count")?,
            "--seconds" => seconds = number("seconds")?,
            t if !t.starts_with('-') => only.push(t.to_string()),
            other => return Err(format!("unknown fuzz option `{other}`")),
        }
    }
    let known: Vec<&str> = CRATES.iter().flat_map(|c| c.targets.iter().map(|t| t.0)).collect();
    if let Some(bad) = only.iter().find(|t| !known.contains(&t.as_str())) {
        return Err(format!("no fuzz target `{bad}` (targets: {})", known.join(", ")));
    }
    fuzz(runs, seconds, &only)
}

/// Builds every fuzz crate and runs each target (or those in `only`) for `runs` inputs
/// or `seconds`, whichever ends first, from a scratch copy of its seeds.
pub fn fuzz(runs: u64, seconds: u64, only: &[String]) -> Result<(), String> {
    // libfuzzer-sys compiles libFuzzer (C++) with the system compiler.
    xtask::tools::ensure(&[&CXX])?;
    let root = root();
    for c in CRATES {
        let wanted: Vec<_> =
            c.targets.iter().filter(|t| only.is_empty() || only.iter().any(|o| o == t.0)).collect();
        if wanted.is_empty() {
            continue;
        }
        let dir = root.join(c.dir);
        let ok = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", HOST, "--quiet"])
            .current_dir(&dir)
            .env("RUSTFLAGS", RUSTFLAGS)
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?
            .success();
        if !ok {
            return Err(format!("building the fuzz targets in {} failed", c.dir));
        }
        for (name, seeds) in wanted {
            run_target(&dir, name, &root.join(seeds), runs, seconds)?;
        }
    }
    Ok(())
}

fn run_target(dir: &Path, name: &str, seeds: &Path, runs: u64, seconds: u64) -> Result<(), String> {
    let corpus = dir.join("target").join("corpus").join(name);
    let _ = std::fs::remove_dir_all(&corpus);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let entries = std::fs::read_dir(seeds).map_err(|e| format!("{}: {e}", seeds.display()))?;
    let mut count = 0;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_file() && p.extension().is_none_or(|x| x == "bin") {
            let _ = std::fs::copy(&p, corpus.join(e.file_name()));
            count += 1;
        }
    }
    let bin = dir.join("target").join(HOST).join("release").join(name);
    let artifacts = dir.join("target").join("artifacts").join(name);
    std::fs::create_dir_all(&artifacts).map_err(|e| format!("{}: {e}", artifacts.display()))?;
    let out = Command::new(&bin)
        .arg(&corpus)
        .arg(format!("-runs={runs}"))
        .arg(format!("-max_total_time={seconds}"))
        .arg("-max_len=4096")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let log = String::from_utf8_lossy(&out.stderr);
    let stat = |key: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        return Err(format!(
            "fuzz target {name} failed (artifacts in {}):\n{}",
            artifacts.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    println!(
        "fuzz {name}: {} inputs from {count} seeds, {} new corpus units, no crash",
        stat("stat::number_of_executed_units:"),
        stat("stat::new_units_added:")
    );
    Ok(())
}
