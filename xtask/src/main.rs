//! `cargo xtask`: the project's build, run, test and bring-up commands.

mod bench;
mod bench_destroy;
mod bench_qemu;
mod fuzz;
mod inspect;
mod test;

use std::process::ExitCode;
use std::time::Duration;
use xtask::qemu::{self, Iommu, Machine, Verdict};

/// Each command's usage: `cargo xtask CMD --help` prints its entry, `cargo xtask help`
/// all of them. The README's command table says the same.
const COMMANDS: &[(&str, &str)] = &[
    (
        "build",
        "build [--release]
    build the hypervisor ELF for x86_64-unknown-none and print its path",
    ),
    (
        "qemu",
        "qemu [--iommu intel|amd|none] [--release] [--cmdline TEXT] [--timeout SECS]
     [--gdb] [--log FILE] [--linux] [-- QEMU ARGS]
    boot the hypervisor in QEMU (q35, 2 GiB, edu at 00:04.0 and 00:05.0), serial on
    stdio; exits 0 only when the hypervisor itself reports success.
    --gdb      start paused with QEMU's gdb stub on :1234 and no time limit
    --log FILE also write the serial log to FILE
    --linux    three partitions: Debian's Linux with QEMU's NVMe controller (00:06.0)
               and the two edu guests (fetches the Linux guest on first use)",
    ),
    (
        "bochs",
        "bochs [--cpu MODEL] [--release] [--cmdline TEXT] [--timeout SECS]
    boot the hypervisor (stripped, from a GRUB ISO) under Bochs headless, serial log on
    stdout; exits 0 only when the hypervisor itself reports success. MODEL is a Bochs
    CPU (`bochs --help cpu`): corei7_skylake_x (VMX with EPT, the default),
    corei5_lynnfield_750 (VMX, no unrestricted guest), ryzen (SVM with nested paging)",
    ),
    (
        "iso",
        "iso [--release] [--cmdline TEXT] [--config FILE] [--module FILE ...] [--timeout SECS]
    build a GRUB hybrid BIOS/UEFI ISO (target/.../hypervisor.iso) for a USB stick: the
    configuration (as partitions.cfg) and guest modules, and a menu (report / run the
    configuration / JSON report / type a command line), default entry after SECS (5)",
    ),
    (
        "test",
        "test
    run every test: `lint` first, host tests, a short fuzz run, then the QEMU suites once
    per QEMU version (7.2 and 10.0; only $QEMU when set; serial logs kept under
    target/test-logs/)",
    ),
    (
        "install-qemu",
        "install-qemu
    fetch QEMU 10.0 into the cache next to the system's 7.2 (done by `test` on first
    use) and print both versions",
    ),
    (
        "linux-guest",
        "linux-guest
    fetch Debian 12's kernel and busybox-static (apt-get download, not installed) into
    ~/.cache/hypervisor-xtask/linux, build the initramfs and the NVMe disk image there
    (done by the Linux suite on first use) and print their paths",
    ),
    (
        "lint",
        "lint
    rustfmt check and clippy for the host crates and the kernel",
    ),
    (
        "bench",
        "bench [--json] [--gib N] [--sync-ns N] [--cmd-ns N] [--plot FILE.svg]
      [--format vtd|amdv1] [--backing 4k-contig|4k-frag|2m|mixed]
    teardown benchmarks on the host (page-table engine)
bench --qemu [--iommu intel|amd] [--json] [--debug]
    teardown of 1 GiB in QEMU per unmap strategy (both IOMMUs unless one is named)",
    ),
    (
        "inspect",
        "inspect [--json] [FILE...]
    decode DMAR/IVRS tables (default: this machine's)
inspect --machine [--json] [DIR]
    report a Linux machine (or a recorded tree): every PCI function's unit, requester
    id, group and verdict, and a configuration skeleton
inspect --record DIR
    copy what --machine reads from this machine to DIR",
    ),
    (
        "fuzz",
        "fuzz [--runs N] [--seconds S] [TARGET...]
    build the libFuzzer targets (iommu/fuzz, boot/fuzz) and run each from its seeds
    (default 50000 inputs or 20 s each)",
    ),
];

fn usage() -> String {
    let mut u = String::from(
        "usage: cargo xtask <command> [options]   (cargo xtask <command> --help)\n\ncommands:",
    );
    for (_, text) in COMMANDS {
        for line in text.lines() {
            u.push_str("\n  ");
            u.push_str(line);
        }
    }
    u
}

fn command_usage(cmd: &str) -> Option<String> {
    COMMANDS.iter().find(|(n, _)| *n == cmd).map(|(_, t)| {
        t.lines()
            .map(
                |l| {
                    if l.starts_with(' ') {
                        l.to_string()
                    } else {
                        format!("usage: cargo xtask {l}")
                    }
                },
            )
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// Exit status of a usage error (a bad command, option or value), as for most tools.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{}", usage());
        return ExitCode::from(USAGE_ERROR);
    };
    if let Some(help) =
        command_usage(cmd).filter(|_| rest.iter().any(|a| a == "--help" || a == "-h"))
    {
        println!("{help}");
        return ExitCode::SUCCESS;
    }
    let result = match cmd.as_str() {
        "build" => build(rest),
        "qemu" => run_qemu(rest),
        "bochs" => run_bochs(rest),
        "iso" => iso(rest),
        "test" => no_options("test", rest).and_then(|()| test::run(rest)),
        "lint" => no_options("lint", rest).and_then(|()| test::lint()),
        "install-qemu" => no_options("install-qemu", rest).and_then(|()| install_qemu()),
        "linux-guest" => no_options("linux-guest", rest).and_then(|()| linux_guest()),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        "inspect" => inspect::run(rest),
        "help" | "--help" | "-h" => match rest.first() {
            Some(c) => match command_usage(c) {
                Some(u) => {
                    println!("{u}");
                    Ok(())
                }
                None => Err(xtask::usage_error(format!("no command `{c}`"))),
            },
            None => {
                println!("{}", usage());
                Ok(())
            }
        },
        other => Err(xtask::usage_error(format!("unknown command `{other}`"))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) if xtask::is_usage_error(&msg) => {
            let text = msg.trim_start_matches(xtask::USAGE_MARK);
            eprintln!("error: {text}");
            eprintln!("{}", command_usage(cmd).unwrap_or_else(usage));
            ExitCode::from(USAGE_ERROR)
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Makes sure every QEMU the suites run on is there, and says which they are.
fn install_qemu() -> Result<(), String> {
    xtask::tools::ensure(&[&xtask::tools::QEMU])?;
    for q in xtask::qemu_versions::suite_qemus()? {
        println!("xtask: {} ({})", q.version, q.binary.display());
    }
    Ok(())
}

/// QEMU arguments for `qemu --linux`: the configuration (a Linux partition owning QEMU's
/// NVMe controller at 00:06.0, then the default's two edu partitions), the kernel and
/// initramfs as boot modules, and the controller with a fresh copy of the disk image,
/// all next to the kernel `k`.
fn linux_demo(k: &std::path::Path) -> Result<Vec<String>, String> {
    let g = xtask::linux_guest::ensure()?;
    let dir = k.parent().unwrap_or(std::path::Path::new("."));
    let name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let (kernel, initrd) =
        (name(&g.kernel).unwrap_or_default(), name(&g.initrd).unwrap_or_default());
    let cfg = dir.join("linux-demo.cfg");
    let text = format!(
        "# cargo xtask qemu --linux\npartition linux\n  memory 128M\n  backing 2m\n  image linux:{kernel}\n  initrd {initrd}\n  device 00:06.0\n{}",
        boot::partition_config::DEFAULT_CONFIG
    );
    std::fs::write(&cfg, text).map_err(|e| format!("{}: {e}", cfg.display()))?;
    let disk = dir.join("linux-demo-disk.img");
    std::fs::copy(&g.disk, &disk).map_err(|e| format!("{}: {e}", disk.display()))?;
    let modules = [cfg, g.kernel.clone(), g.initrd.clone()];
    let modules: Vec<String> = modules.iter().map(|p| p.display().to_string()).collect();
    Ok(vec![
        "-initrd".into(),
        modules.join(","),
        "-drive".into(),
        format!("file={},if=none,id=lnvme,format=raw", disk.display()),
        "-device".into(),
        "nvme,drive=lnvme,serial=linux0,addr=0x6".into(),
    ])
}

/// Makes sure the Linux guest's files are in the cache, and says where they are.
fn linux_guest() -> Result<(), String> {
    let g = xtask::linux_guest::ensure()?;
    println!("xtask: Linux {} guest", g.release);
    for (what, p) in [("kernel", &g.kernel), ("initramfs", &g.initrd), ("disk", &g.disk)] {
        println!("xtask:   {what} {}", p.display());
    }
    Ok(())
}

fn no_options(cmd: &str, args: &[String]) -> Result<(), String> {
    match args.first() {
        Some(a) => Err(xtask::usage_error(format!("`{cmd}` takes no options (got `{a}`)"))),
        None => Ok(()),
    }
}

/// Options shared by build and qemu.
struct Options {
    release: bool,
    iommu: Iommu,
    cmdline: String,
    timeout: u64,
    gdb: bool,
    linux: bool,
    log: Option<std::path::PathBuf>,
    extra: Vec<String>,
}

/// One parser for build and qemu: lexopt, every bad option or value a usage error.
fn parse_options(args: &[String], allow_qemu: bool) -> Result<Options, String> {
    use lexopt::prelude::*;
    let mut o = Options {
        release: false,
        iommu: Iommu::Intel { aw_bits: None, caching_mode: false },
        cmdline: String::new(),
        timeout: 300,
        gdb: false,
        linux: false,
        log: None,
        extra: Vec::new(),
    };
    let usage = |e: lexopt::Error| xtask::usage_error(e.to_string());
    // Everything after `--` goes to QEMU untouched.
    let (mine, extra) = match args.iter().position(|a| a == "--") {
        Some(i) if allow_qemu => (&args[..i], args[i + 1..].to_vec()),
        Some(_) => return Err(xtask::usage_error("`--` (QEMU arguments) only for qemu".into())),
        None => (args, Vec::new()),
    };
    o.extra = extra;
    let mut p = lexopt::Parser::from_args(mine.iter().cloned());
    while let Some(arg) = p.next().map_err(usage)? {
        match arg {
            Long("release") => o.release = true,
            Long("cmdline") => o.cmdline = p.value().map_err(usage)?.string().map_err(usage)?,
            Long("iommu") if allow_qemu => {
                let v = p.value().map_err(usage)?.string().map_err(usage)?;
                o.iommu = Iommu::parse(&v).map_err(xtask::usage_error)?
            }
            Long("timeout") if allow_qemu => {
                o.timeout = p.value().map_err(usage)?.parse().map_err(usage)?
            }
            Long("gdb") if allow_qemu => o.gdb = true,
            Long("linux") if allow_qemu => o.linux = true,
            Long("log") if allow_qemu => o.log = Some(p.value().map_err(usage)?.into()),
            other => return Err(usage(other.unexpected())),
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
    let mut contents = xtask::build::IsoContents { timeout: 5, ..Default::default() };
    let mut release = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value =
            |what: &str| it.next().cloned().ok_or(xtask::usage_error(format!("{a} needs {what}")));
        match a.as_str() {
            "--release" => release = true,
            "--cmdline" => contents.cmdline = value("the kernel command line")?,
            "--config" => contents.config = Some(value("a configuration file")?.into()),
            "--module" => contents.modules.push(value("a file")?.into()),
            "--timeout" => {
                contents.timeout = value("seconds")?
                    .parse()
                    .map_err(|_| xtask::usage_error("--timeout takes seconds".into()))?
            }
            other => return Err(xtask::usage_error(format!("unknown option `{other}`"))),
        }
    }
    for f in contents.config.iter().chain(&contents.modules) {
        if !f.is_file() {
            return Err(format!("{}: no such file", f.display()));
        }
    }
    if let Some(cfg) = &contents.config {
        // Refuse a configuration the kernel would refuse, before writing a stick.
        let text = std::fs::read_to_string(cfg).map_err(|e| format!("{}: {e}", cfg.display()))?;
        boot::partition_config::parse(&text).map_err(|e| format!("{}: {e}", cfg.display()))?;
    }
    let k = xtask::build::kernel(release)?;
    let iso = xtask::build::iso_with_menu(&k, &contents, "hypervisor")?;
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
    if o.linux {
        m.extra = linux_demo(&k)?;
    }
    m.extra.extend(o.extra);
    m.timeout = Duration::from_secs(o.timeout);
    if o.gdb {
        m.extra.extend(["-s".into(), "-S".into()]);
        // Paused until gdb continues, then as long as the session lasts.
        m.timeout = Duration::from_secs(365 * 24 * 3600);
        eprintln!(
            "xtask: QEMU is paused for gdb; in another terminal:\n  gdb {} -ex 'target remote :1234'",
            k.display()
        );
    }
    let out = qemu::run(&m, true)?;
    if let Some(path) = &o.log {
        std::fs::write(path, &out.log).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("xtask: serial log written to {}", path.display());
    }
    match out.verdict {
        Verdict::Success => Ok(()),
        _ => Err(out.describe()),
    }
}

fn run_bochs(args: &[String]) -> Result<(), String> {
    use lexopt::prelude::*;
    let usage = |e: lexopt::Error| xtask::usage_error(e.to_string());
    let (mut cpu, mut release, mut cmdline, mut timeout) =
        ("corei7_skylake_x".to_string(), false, String::new(), 600u64);
    let mut p = lexopt::Parser::from_args(args.iter().cloned());
    while let Some(arg) = p.next().map_err(usage)? {
        match arg {
            Long("cpu") => cpu = p.value().map_err(usage)?.string().map_err(usage)?,
            Long("release") => release = true,
            Long("cmdline") => cmdline = p.value().map_err(usage)?.string().map_err(usage)?,
            Long("timeout") => timeout = p.value().map_err(usage)?.parse().map_err(usage)?,
            other => return Err(usage(other.unexpected())),
        }
    }
    if cpu.is_empty() || !cpu.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(xtask::usage_error(format!("`{cpu}` is not a Bochs CPU model name")));
    }
    let k = xtask::build::kernel(release)?;
    let mut m = xtask::bochs::BochsMachine::new(&k, &cpu);
    m.cmdline = cmdline;
    m.timeout = Duration::from_secs(timeout);
    let out = xtask::bochs::run(&m, true)?;
    eprintln!("xtask: {} after {:.1?}", out.describe(), out.elapsed);
    match out.verdict {
        Verdict::Success => Ok(()),
        _ => Err(out.describe()),
    }
}
