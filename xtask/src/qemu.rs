//! Booting the hypervisor under QEMU: one description of a machine, one runner that
//! bounds the run in time, captures the serial log and judges the exit status.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// QEMU's exit status when the hypervisor wrote 0x10 to isa-debug-exit.
pub const EXIT_SUCCESS: i32 = 33;
/// QEMU's exit status when the hypervisor wrote 0x11 (a failure it reported itself).
pub const EXIT_FAILURE: i32 = 35;

/// The intel-iommu address width when a machine names none: 3-level tables.
pub const DEFAULT_AW_BITS: u8 = 39;

/// Which emulated IOMMU the machine has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iommu {
    /// No IOMMU.
    None,
    /// Intel VT-d (`intel-iommu`).
    Intel {
        /// `aw-bits` (39: 3-level tables; 48: 4-level). `None` is [`DEFAULT_AW_BITS`],
        /// stated on the command line all the same (QEMU 7.2 defaults to 39, 10.0 to 48).
        aw_bits: Option<u8>,
        /// `caching-mode=on`.
        caching_mode: bool,
    },
    /// AMD-Vi (`amd-iommu`).
    Amd {
        /// `intremap=on`.
        intremap: bool,
    },
}

impl Iommu {
    /// Parses `intel`, `amd` or `none` (the `--iommu` option).
    pub fn parse(s: &str) -> Result<Iommu, String> {
        match s {
            "intel" => Ok(Iommu::Intel { aw_bits: None, caching_mode: false }),
            // intremap=on: partitions need complete interrupt remapping, and only then
            // does QEMU's IVRS name the IOAPIC.
            "amd" => Ok(Iommu::Amd { intremap: true }),
            "none" => Ok(Iommu::None),
            other => Err(format!("unknown IOMMU `{other}`: expected intel, amd or none")),
        }
    }
}

/// How the hypervisor is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS and QEMU's `-kernel` (Multiboot1, or PVH for a PVH-only image).
    DirectKernel(PathBuf),
    /// SeaBIOS booting a GRUB ISO (Multiboot2).
    BiosIso(PathBuf),
    /// OVMF (UEFI) booting a GRUB ISO (Multiboot2).
    UefiIso(PathBuf),
}

/// A QEMU edu test device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edu {
    /// PCI slot on the root bus (device number).
    pub slot: u8,
}

/// One machine to boot.
#[derive(Debug, Clone)]
pub struct Machine {
    /// How the hypervisor gets loaded.
    pub firmware: Firmware,
    /// The emulated IOMMU.
    pub iommu: Iommu,
    /// edu devices on the root bus.
    pub edu: Vec<Edu>,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Kernel command line (direct boot only; an ISO carries its own).
    pub cmdline: String,
    /// Extra QEMU arguments, appended last.
    pub extra: Vec<String>,
    /// Upper bound on the run's wall time.
    pub timeout: Duration,
}

impl Machine {
    /// A q35 machine booting `kernel` directly, with one edu device at slot 4.
    pub fn new(kernel: &Path, iommu: Iommu) -> Machine {
        Machine {
            firmware: Firmware::DirectKernel(kernel.to_path_buf()),
            iommu,
            edu: vec![Edu { slot: 4 }],
            memory_mib: 2048,
            cmdline: String::new(),
            extra: Vec::new(),
            timeout: Duration::from_secs(120),
        }
    }

    /// The QEMU command line for this machine.
    pub fn args(&self) -> Result<Vec<String>, String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &str| a.push(s.to_string());
        let machine = match self.iommu {
            Iommu::Intel { .. } => "q35,kernel-irqchip=split",
            _ => "q35",
        };
        for s in ["-machine", machine, "-cpu", "max", "-m"] {
            push(s);
        }
        push(&self.memory_mib.to_string());
        for s in ["-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"] {
            push(s);
        }
        for s in ["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"] {
            push(s);
        }
        // The IOMMU must come before the devices it translates.
        match &self.iommu {
            Iommu::None => {}
            iommu @ (Iommu::Intel { .. } | Iommu::Amd { .. }) => {
                push("-device");
                push(&crate::qemu_props::iommu_device(iommu, &crate::tools::qemu_binary())?);
            }
        }
        for e in &self.edu {
            push("-device");
            push(&format!("edu,addr={:#x},dma_mask=0xffffffffffff", e.slot));
        }
        match &self.firmware {
            Firmware::DirectKernel(k) => {
                push("-kernel");
                push(&k.display().to_string());
                if !self.cmdline.is_empty() {
                    push("-append");
                    push(&self.cmdline);
                }
            }
            Firmware::BiosIso(iso) => {
                push("-cdrom");
                push(&iso.display().to_string());
            }
            Firmware::UefiIso(iso) => {
                crate::tools::ensure(&[&crate::tools::OVMF])?;
                let vars = iso.with_extension("ovmf-vars.fd");
                std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
                    .map_err(|e| format!("copying OVMF variables: {e}"))?;
                push("-drive");
                push("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd");
                push("-drive");
                push(&format!("if=pflash,format=raw,file={}", vars.display()));
                push("-cdrom");
                push(&iso.display().to_string());
            }
        }
        a.extend(self.extra.iter().cloned());
        Ok(a)
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The hypervisor reported success through isa-debug-exit.
    Success,
    /// The hypervisor reported a failure itself.
    Failure,
    /// QEMU exited with some other status: a triple fault or reset (0), a QEMU error.
    QemuExit(Option<i32>),
    /// The run did not finish in time and was killed.
    Timeout,
    /// Bochs ended without the hypervisor's verdict (a panic, a triple fault, a guest
    /// that never printed its closing line): what it said.
    EmulatorEnded(String),
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub verdict: Verdict,
    /// Everything on the serial console and QEMU's own stderr.
    pub log: String,
    /// Wall time.
    pub elapsed: Duration,
    /// The QEMU that ran it (its `--version` line).
    pub qemu_version: String,
}

impl Outcome {
    /// A sentence for a human: what went wrong, or "success".
    pub fn describe(&self) -> String {
        match &self.verdict {
            Verdict::Success => "success".into(),
            Verdict::Failure => "the hypervisor reported a failure".into(),
            Verdict::QemuExit(Some(0)) => {
                "QEMU exited with status 0 without the hypervisor's verdict (triple fault or reset?)".into()
            }
            Verdict::QemuExit(code) => format!("QEMU exited with status {code:?}"),
            Verdict::Timeout => "timed out: the run was killed".into(),
            Verdict::EmulatorEnded(why) => why.clone(),
        }
    }
}

/// Boots `machine`, echoing the serial console to our stdout when `echo` is set.
pub fn run(machine: &Machine, echo: bool) -> Result<Outcome, String> {
    crate::tools::ensure(&[&crate::tools::QEMU])?;
    let qemu = crate::tools::qemu_binary();
    let qemu_version = crate::qemu_versions::version_of(&qemu)?;
    let args = machine.args()?;
    // Which emulator, and the IOMMU exactly as asked for: the first lines of every log.
    let header = vec![
        format!("xtask: {qemu_version} ({})", qemu.display()),
        format!("xtask: machine {}", crate::qemu_props::describe(&args)),
    ];
    if echo {
        for line in &header {
            println!("{line}");
        }
    }
    let start = Instant::now();
    let mut child = Command::new(&qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if echo {
                    println!("{line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    })
    .collect();
    drop(tx);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if start.elapsed() > machine.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for r in readers {
        let _ = r.join();
    }
    let log: Vec<String> = header.into_iter().chain(rx.try_iter()).collect();
    let verdict = match status.map(|s| s.code()) {
        None => Verdict::Timeout,
        Some(Some(EXIT_SUCCESS)) => Verdict::Success,
        Some(Some(EXIT_FAILURE)) => Verdict::Failure,
        Some(code) => Verdict::QemuExit(code),
    };
    Ok(Outcome { verdict, log: log.join("\n"), elapsed: start.elapsed(), qemu_version })
}
