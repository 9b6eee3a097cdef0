//! `cargo xtask`: the project's build, run, test and bring-up commands.

mod bench;
mod bench_destroy;
mod bench_qemu;
mod inspect;
mod test;

use std::process::ExitCode;
use std::time::Duration;
use xtask::qemu::{self, Iommu, Machine, Verdict};

const USAGE: &str = "usage: cargo xtask <command> [options]

commands:
  build [--release]             build the hypervisor for x86_64-unknown-none
  qemu [--iommu intel|amd|none] [--release] [--cmdline TEXT] [--timeout SECS] [-- QEMU ARGS]
                                boot the hypervisor in QEMU (q35), serial on stdio;
                                exits 0 only when the hypervisor itself reports success
  iso [--release] [--cmdline TEXT]
                                build a GRUB hybrid BIOS/UEFI ISO (target/.../hypervisor.iso)
                                for a USB stick on a real machine
  test                          run every test: host tests, then the QEMU suites
  lint                          rustfmt check and clippy for the host crates and the kernel
  bench [--json] [--gib N] [--sync-ns N] [--cmd-ns N] [--plot FILE.svg]
        [--format vtd|amdv1] [--backing 4k-contig|4k-frag|2m|mixed]
                                teardown benchmarks on the host (page-table engine)
  bench --qemu [--iommu intel|amd] [--json] [--debug]
                                teardown of 1 GiB in QEMU per unmap strategy (both IOMMUs
                                unless one is named)
  inspect [--json] [FILE...]    decode DMAR/IVRS tables (default: this machine's)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
        "build" => build(rest),
        "qemu" => run_qemu(rest),
        "iso" => iso(rest),
        "test" => test::run(rest),
        "lint" => test::lint(),
        "bench" => bench::run(rest),
        "inspect" => inspect::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Options shared by build, qemu and iso.
struct Options {
    release: bool,
    iommu: Iommu,
    cmdline: String,
    timeout: u64,
    extra: Vec<String>,
}

fn parse_options(args: &[String], allow_qemu: bool) -> Result<Options, String> {
    let mut o = Options {
        release: false,
        iommu: Iommu::Intel { aw_bits: None, caching_mode: false },
        cmdline: String::new(),
        timeout: 300,
        extra: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| it.next().cloned().ok_or(format!("{a} needs {what}"));
        match a.as_str() {
            "--release" => o.release = true,
            "--iommu" if allow_qemu => o.iommu = Iommu::parse(&value("intel, amd or none")?)?,
            "--cmdline" => o.cmdline = value("the kernel command line")?,
            "--timeout" if allow_qemu => {
                o.timeout = value("seconds")?.parse().map_err(|_| "--timeout takes seconds")?
            }
            "--" if allow_qemu => {
                o.extra = it.cloned().collect();
                break;
            }
            other => return Err(format!("unknown option `{other}`\n{USAGE}")),
        }
    }
    Ok(o)
}

fn build(args: &[String]) -> Result<(), String> {
    let o = parse_options(args, false)?;
    let k = xtask::build::kernel(o.release)?;
    println!("{}", k.display());
    Ok(())
}

fn iso(args: &[String]) -> Result<(), String> {
    let o = parse_options(args, false)?;
    let k = xtask::build::kernel(o.release)?;
    let iso = xtask::build::iso(&k, &o.cmdline, "hypervisor")?;
    println!("{}", iso.display());
    println!(
        "write it to a USB stick with: sudo dd if={} of=/dev/sdX bs=4M conv=fsync",
        iso.display()
    );
    Ok(())
}

fn run_qemu(args: &[String]) -> Result<(), String> {
    let o = parse_options(args, true)?;
    let k = xtask::build::kernel(o.release)?;
    let mut m = Machine::new(&k, o.iommu);
    m.edu = vec![qemu::Edu { slot: 4 }, qemu::Edu { slot: 5 }];
    m.cmdline = o.cmdline;
    m.extra = o.extra;
    m.timeout = Duration::from_secs(o.timeout);
    let out = qemu::run(&m, true)?;
    match out.verdict {
        Verdict::Success => Ok(()),
        _ => Err(out.describe()),
    }
}
