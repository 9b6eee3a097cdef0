//! `cargo xtask`: the project's build, run, test and bring-up commands.

mod bench;
mod inspect;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command> [options]

commands:
  build [--release]             build the hypervisor for x86_64-unknown-none
  qemu [--iommu intel|amd|none] [-- QEMU ARGS]
                                boot the hypervisor in QEMU (q35), serial on stdio
  iso                           build a GRUB hybrid BIOS/UEFI ISO for a USB stick
  test                          run every test: host tests, then the QEMU suites
  bench [--json] [--qemu]       teardown benchmarks
  inspect [--json] [FILE...]    decode DMAR/IVRS tables (default: this machine's)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match cmd.as_str() {
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
