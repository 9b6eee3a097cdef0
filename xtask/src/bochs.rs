//! Booting the hypervisor under Bochs 2.7: the emulator that offers Intel VMX (with EPT,
//! unrestricted guest and VPID on its newer Intel models) and AMD SVM with nested paging
//! (its `ryzen` model), which QEMU's software emulation does not (it has no VMX).
//!
//! One run: the kernel stripped (GRUB reads the whole ELF through emulated ATAPI PIO, so
//! a 20 MB debug ELF costs many seconds), a GRUB ISO whose one entry boots it with
//! `exit=bochs` and the given command line, a bochsrc in a fresh temporary directory, Bochs
//! started headless (`rfb` display with `timeout=0`, the debugger's rc file `c`, `q`),
//! bounded in time. Bochs' exit status says nothing (1 for any shutdown or panic, 0 for
//! any debugger entry): the verdict comes from the serial log's closing line (`run ended
//! (success)` / `run ended (failure)`, printed by `kernel/src/exit.rs` before it writes to
//! Bochs' shutdown port) together with Bochs' own closing message (`Shutdown port:
//! shutdown requested`). See docs/bochs.md.

use crate::qemu::{Outcome, Verdict};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bochs and its BIOS images.
pub const BOCHS: crate::tools::Tool =
    crate::tools::Tool { name: "bochs", packages: &["bochs", "bochsbios", "vgabios"] };
/// The BIOS and VGA BIOS images the bochsrc names.
pub const BOCHS_FILES: &[crate::tools::Tool] = &[
    crate::tools::Tool { name: "/usr/share/bochs/BIOS-bochs-latest", packages: &["bochsbios"] },
    crate::tools::Tool { name: "/usr/share/vgabios/vgabios.bin", packages: &["vgabios"] },
];

/// What Bochs prints (on stderr and in its log) when the guest wrote "Shutdown" to port
/// 0x8900.
pub const SHUTDOWN_MESSAGE: &str = "Shutdown port: shutdown requested";

/// The serial log's closing lines `kernel/src/exit.rs` prints before the shutdown.
pub const CLOSING_SUCCESS: &str = "run ended (success)";
/// See [`CLOSING_SUCCESS`].
pub const CLOSING_FAILURE: &str = "run ended (failure)";

/// One Bochs machine to boot.
#[derive(Debug, Clone)]
pub struct BochsMachine {
    /// The kernel ELF (stripped into the ISO).
    pub kernel: PathBuf,
    /// Bochs CPU model (`bochs --help cpu`): `corei7_skylake_x`, `ryzen`, ...
    pub cpu: String,
    /// Kernel command line (after `exit=bochs`).
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Upper bound on the run's wall time.
    pub timeout: Duration,
}

impl BochsMachine {
    /// A machine with `cpu` booting `kernel`, 512 MiB, at most 10 minutes.
    pub fn new(kernel: &Path, cpu: &str) -> BochsMachine {
        BochsMachine {
            kernel: kernel.to_path_buf(),
            cpu: cpu.to_string(),
            cmdline: String::new(),
            memory_mib: 512,
            timeout: Duration::from_secs(600),
        }
    }

    /// The bochsrc for this machine with the ISO at `iso`, serial and Bochs logs in `dir`.
    pub fn bochsrc(&self, iso: &Path, dir: &Path) -> String {
        format!(
            "megs: {mem}\n\
             cpu: model={cpu}, count=1, ips=200000000, reset_on_triple_fault=0, ignore_bad_msrs=1\n\
             romimage: file=/usr/share/bochs/BIOS-bochs-latest, options=fastboot\n\
             vgaromimage: file=/usr/share/vgabios/vgabios.bin\n\
             pci: enabled=1, chipset=i440fx\n\
             ata0-slave: type=cdrom, path={iso}, status=inserted\n\
             boot: cdrom\n\
             clock: sync=none, time0=utc\n\
             com1: enabled=1, mode=file, dev={serial}\n\
             display_library: rfb, options=\"timeout=0\"\n\
             plugin_ctrl: speaker=0\n\
             panic: action=fatal\n\
             error: action=report\n\
             log: {log}\n\
             mouse: enabled=0\n",
            mem = self.memory_mib,
            cpu = self.cpu,
            iso = iso.display(),
            serial = dir.join("serial.log").display(),
            log = dir.join("bochs.log").display(),
        )
    }
}

/// A fresh directory for one run's ISO tree, bochsrc and logs.
fn run_dir() -> Result<PathBuf, String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hypervisor-bochs-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// Strips `kernel` into `dir` and builds the one-entry ISO around it.
fn stripped_iso(kernel: &Path, cmdline: &str, dir: &Path) -> Result<PathBuf, String> {
    let stripped = dir.join("kernel");
    let out = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(kernel)
        .output()
        .map_err(|e| format!("cannot run strip (binutils): {e}"))?;
    if !out.status.success() {
        return Err(format!("strip failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    crate::build::iso(&stripped, &format!("exit=bochs {cmdline}"), "bochs")
}

/// Decides the verdict from the serial log and Bochs' closing message: success or
/// failure only when the hypervisor's closing line is the serial log's last line and
/// Bochs ended through its shutdown port.
pub fn verdict(serial: &str, bochs_message: &str, timed_out: bool) -> Verdict {
    if timed_out {
        return Verdict::Timeout;
    }
    let last = serial.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let shutdown = bochs_message.contains(SHUTDOWN_MESSAGE);
    match (last, shutdown) {
        (CLOSING_SUCCESS, true) => Verdict::Success,
        (CLOSING_FAILURE, true) => Verdict::Failure,
        _ => Verdict::EmulatorEnded(format!(
            "Bochs ended ({}) after the serial line {last:?}",
            closing_message(bochs_message).unwrap_or("no closing message")
        )),
    }
}

/// The line after Bochs' "exiting with the following message:".
fn closing_message(text: &str) -> Option<&str> {
    let mut lines = text.lines();
    lines.find(|l| l.contains("Bochs is exiting with the following message"))?;
    lines.next().map(str::trim)
}

/// Boots `m` under Bochs; with `echo`, the serial log is printed as it grows.
pub fn run(m: &BochsMachine, echo: bool) -> Result<Outcome, String> {
    let mut tools = vec![&BOCHS];
    tools.extend(BOCHS_FILES.iter());
    crate::tools::ensure(&tools)?;
    let dir = run_dir()?;
    let iso = stripped_iso(&m.kernel, &m.cmdline, &dir)?;
    // The ISO is written next to the kernel it was made from (`build::iso`), in `dir`.
    let rc = dir.join("bochsrc");
    std::fs::write(&rc, m.bochsrc(&iso, &dir)).map_err(|e| format!("{}: {e}", rc.display()))?;
    let debugger = dir.join("debugger.rc");
    std::fs::write(&debugger, "c\nq\n").map_err(|e| format!("{}: {e}", debugger.display()))?;
    let header = format!("xtask: Bochs 2.7, cpu {}, {} MiB, i440FX", m.cpu, m.memory_mib);
    if echo {
        println!("{header}");
    }
    let start = Instant::now();
    let mut child = Command::new(BOCHS.name)
        .arg("-q")
        .arg("-f")
        .arg(&rc)
        .arg("-rc")
        .arg(&debugger)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start bochs: {e}"))?;
    let mut pipes: Vec<std::thread::JoinHandle<String>> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut r| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    })
    .collect();
    let serial_path = dir.join("serial.log");
    let mut shown = 0usize;
    let mut show = |all: bool| {
        if !echo {
            return;
        }
        let text = std::fs::read(&serial_path).unwrap_or_default();
        // Whole lines only while running; everything at the end.
        let upto = if all {
            text.len()
        } else {
            text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        if upto > shown {
            print!("{}", String::from_utf8_lossy(&text[shown..upto]));
            shown = upto;
        }
    };
    let timed_out = loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            break false;
        }
        if start.elapsed() > m.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        show(false);
        std::thread::sleep(Duration::from_millis(100));
    };
    show(true);
    let bochs_out: String = pipes.drain(..).filter_map(|h| h.join().ok()).collect();
    let serial =
        String::from_utf8_lossy(&std::fs::read(&serial_path).unwrap_or_default()).into_owned();
    let verdict = verdict(&serial, &bochs_out, timed_out);
    let ending = closing_message(&bochs_out).unwrap_or("none").to_string();
    let log = format!("{header}\n{serial}\nxtask: Bochs' closing message: {ending}");
    // The outcome carries the serial log; nothing else in the directory is needed.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome { verdict, log, elapsed: start.elapsed(), qemu_version: header })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXITING: &str = "Bochs is exiting with the following message:\n[UNMAP ] Shutdown port: shutdown requested\n";

    #[test]
    fn verdict_needs_both_the_closing_line_and_the_shutdown() {
        assert_eq!(verdict("a\nrun ended (success)\n", EXITING, false), Verdict::Success);
        assert_eq!(verdict("a\nrun ended (failure)", EXITING, false), Verdict::Failure);
        // A guest-controlled or earlier line does not count: only the last one.
        assert!(matches!(
            verdict("run ended (success)\nmore\n", EXITING, false),
            Verdict::EmulatorEnded(_)
        ));
        // Bochs ended some other way (a panic, a triple fault).
        let panic = "Bochs is exiting with the following message:\n[CPU0  ] exception(): 3rd (13) exception with no resolution\n";
        match verdict("run ended (success)\n", panic, false) {
            Verdict::EmulatorEnded(why) => assert!(why.contains("3rd (13) exception"), "{why}"),
            v => panic!("{v:?}"),
        }
        assert_eq!(verdict("run ended (success)\n", EXITING, true), Verdict::Timeout);
    }
}
