//! The QEMU versions the suites run on: Debian 12's QEMU 7.2 (the system's
//! `qemu-system-x86_64`) and QEMU 10.0 (Debian 13's, also in bookworm-backports), installed
//! next to 7.2 without replacing it.
//!
//! QEMU 10.0 comes from bookworm-backports through apt's ordinary client: a private
//! sources list and package lists (the system's apt configuration is not touched),
//! `apt-get download` of the three packages a headless x86 machine needs, `dpkg -x` into
//! a cache folder. A wrapper script there starts it with its own firmware/option-ROM data
//! (`-L`) and modules (`QEMU_MODULE_DIR`). The folder is complete only once the wrapper
//! exists and reports 10.0, so an interrupted install is redone and a finished one is
//! reused.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian suite QEMU 10.0 is taken from.
const SUITE: &str = "bookworm-backports";
/// The packages unpacked: the emulator, its shared modules, its firmware and ROMs.
const PACKAGES: &[&str] = &["qemu-system-x86", "qemu-system-common", "qemu-system-data"];
/// The version prefix the unpacked emulator must report.
const WANTED: &str = "QEMU emulator version 10.0.";

/// One QEMU the suites run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qemu {
    /// What to execute (the binary or the wrapper script).
    pub binary: PathBuf,
    /// Its `--version` first line.
    pub version: String,
}

/// The first line of `binary --version`.
pub fn version_of(binary: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if !out.status.success() || !line.starts_with("QEMU emulator version ") {
        return Err(format!("{} --version said {line:?}", binary.display()));
    }
    Ok(line)
}

/// Where QEMU 10.0 is cached: `$XDG_CACHE_HOME` or `~/.cache`, else the target folder.
fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| crate::build::workspace_root().join("target"));
    base.join("hypervisor-xtask").join("qemu-10.0")
}

/// The wrapper that starts the cached QEMU 10.0.
pub fn qemu10_wrapper() -> PathBuf {
    cache_root().join("qemu-system-x86_64")
}

/// Runs `cmd`, turning a failure into a message that names `what`.
fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Makes sure QEMU 10.0 is unpacked in the cache (downloading it on first use) and returns
/// it. Idempotent: a cache whose wrapper reports 10.0 is used as it is.
pub fn ensure_qemu10() -> Result<Qemu, String> {
    let wrapper = qemu10_wrapper();
    if let Ok(version) = version_of(&wrapper) {
        if version.starts_with(WANTED) {
            return Ok(Qemu { binary: wrapper, version });
        }
    }
    let root = cache_root();
    let work = root.with_file_name("qemu-10.0-download");
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("xtask: installing QEMU 10.0 from {SUITE} into {}", root.display());
    download(&work)?;
    let unpacked = root.join("root");
    std::fs::create_dir_all(&unpacked).map_err(|e| format!("{}: {e}", unpacked.display()))?;
    let debs = std::fs::read_dir(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let mut count = 0;
    for deb in debs.flatten().map(|d| d.path()) {
        if deb.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked), "dpkg -x")?;
            count += 1;
        }
    }
    if count != PACKAGES.len() {
        return Err(format!("expected {} packages from {SUITE}, got {count}", PACKAGES.len()));
    }
    write_wrapper(&wrapper, &unpacked)?;
    let _ = std::fs::remove_dir_all(&work);
    let version = version_of(&wrapper)?;
    if !version.starts_with(WANTED) {
        return Err(format!("{} reports {version:?}, not 10.0", wrapper.display()));
    }
    Ok(Qemu { binary: wrapper, version })
}

/// `apt-get download`s [`PACKAGES`] from [`SUITE`] into `work`, with a private sources
/// list and private package lists.
fn download(work: &Path) -> Result<(), String> {
    for dir in ["lists/partial", "cache/archives/partial"] {
        std::fs::create_dir_all(work.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
    }
    let sources = work.join("sources.list");
    std::fs::write(
        &sources,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian {SUITE} main\n"
        ),
    )
    .map_err(|e| format!("{}: {e}", sources.display()))?;
    let opts = [
        format!("Dir::Etc::SourceList={}", sources.display()),
        "Dir::Etc::SourceParts=/dev/null".into(),
        format!("Dir::State::Lists={}", work.join("lists").display()),
        format!("Dir::Cache={}", work.join("cache").display()),
        "Debug::NoLocking=1".into(),
        "APT::Sandbox::User=root".into(),
    ];
    let apt = |args: &[String]| {
        let mut cmd = Command::new("apt-get");
        cmd.current_dir(work);
        for o in &opts {
            cmd.arg("-o").arg(o);
        }
        cmd.args(args);
        cmd
    };
    run(&mut apt(&["-qq".into(), "update".into()]), "apt-get update (bookworm-backports)")?;
    let mut args: Vec<String> = vec!["-qq".into(), "download".into()];
    args.extend(PACKAGES.iter().map(|p| format!("{p}/{SUITE}")));
    run(&mut apt(&args), "apt-get download (QEMU 10.0)")
}

/// The wrapper script: QEMU 10.0's own data first, then the system's SeaBIOS and ROMs.
fn write_wrapper(wrapper: &Path, root: &Path) -> Result<(), String> {
    let r = root.display();
    let script = format!(
        "#!/bin/sh\n\
         # QEMU 10.0 from {SUITE}, unpacked by cargo xtask (not installed system-wide).\n\
         QEMU_MODULE_DIR={r}/usr/lib/x86_64-linux-gnu/qemu exec {r}/usr/bin/qemu-system-x86_64 \
         -L {r}/usr/share/qemu -L /usr/share/qemu -L /usr/share/seabios \"$@\"\n"
    );
    std::fs::write(wrapper, script).map_err(|e| format!("{}: {e}", wrapper.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(wrapper, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", wrapper.display()))
}

/// The QEMUs `cargo xtask test` runs the suites on: only `$QEMU` when it is set;
/// otherwise the system's QEMU and QEMU 10.0 (installed into the cache when missing).
pub fn suite_qemus() -> Result<Vec<Qemu>, String> {
    if let Some(q) = std::env::var_os("QEMU") {
        let binary = PathBuf::from(q);
        let version = version_of(&binary)?;
        return Ok(vec![Qemu { binary, version }]);
    }
    let system = PathBuf::from(crate::tools::QEMU.name);
    let mut qemus = vec![Qemu { version: version_of(&system)?, binary: system }];
    let newer = ensure_qemu10()?;
    if newer.version != qemus[0].version {
        qemus.push(newer);
    }
    Ok(qemus)
}
