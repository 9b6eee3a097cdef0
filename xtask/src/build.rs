//! Building the hypervisor image and its derived forms (PVH-only ELF, GRUB ISO).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bare-metal target the kernel is built for.
pub const TARGET: &str = "x86_64-unknown-none";

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Builds one bare-metal package and returns the path of its binary.
fn bare_metal(package: &str, release: bool, guest: Option<&Path>) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "--quiet",
        "--package",
        package,
        "--target",
        TARGET,
    ]);
    if release {
        cmd.arg("--release");
    } else if package == "kernel" {
        // The hostile suite's control knobs: debug (test) builds only, never a release.
        cmd.args(["--features", "test-controls"]);
    }
    // A RUSTFLAGS meant for the host must not leak into the bare-metal build.
    cmd.env_remove("RUSTFLAGS");
    match guest {
        Some(g) => cmd.env("GUEST_ELF", g),
        None => cmd.env_remove("GUEST_ELF"),
    };
    eprintln!(
        "xtask: building the {package} ({}, {TARGET})",
        if release { "release" } else { "debug" }
    );
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the {package} failed"));
    }
    let path =
        target_dir().join(TARGET).join(if release { "release" } else { "debug" }).join(package);
    path.exists()
        .then_some(path.clone())
        .ok_or_else(|| format!("{} was not produced", path.display()))
}

/// Builds the guest program partitions run (embedded in the kernel) and returns its path.
pub fn guest(release: bool) -> Result<PathBuf, String> {
    crate::tools::ensure_rust_target()?;
    bare_metal("guest", release, None)
}

/// Builds the guest, then the kernel ELF embedding it, and returns the kernel's path.
pub fn kernel(release: bool) -> Result<PathBuf, String> {
    let guest = guest(release)?;
    bare_metal("kernel", release, Some(&guest))
}

/// Writes a copy of the kernel whose Multiboot1 header is disabled, so QEMU's `-kernel`
/// falls through to the PVH note (QEMU prefers Multiboot1 when both are present).
pub fn pvh_only(kernel: &Path) -> Result<PathBuf, String> {
    let mut bytes = std::fs::read(kernel).map_err(|e| format!("{}: {e}", kernel.display()))?;
    let magic = 0x1BAD_B002u32.to_le_bytes();
    let limit = bytes.len().min(8192);
    let at = (0..limit.saturating_sub(4))
        .step_by(4)
        .find(|&i| bytes[i..i + 4] == magic)
        .ok_or("no Multiboot1 header in the first 8 KiB of the kernel")?;
    bytes[at..at + 4].fill(0);
    let out = kernel.with_file_name("kernel-pvh");
    std::fs::write(&out, bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// A GRUB image's contents beyond the kernel.
#[derive(Debug, Clone, Default)]
pub struct IsoContents {
    /// Appended to every entry's kernel command line.
    pub cmdline: String,
    /// The partition configuration, carried as boot module `partitions.cfg`.
    pub config: Option<PathBuf>,
    /// More boot modules (guest images), each known to the kernel by its file name.
    pub modules: Vec<PathBuf>,
    /// Seconds the menu waits before booting its default entry.
    pub timeout: u32,
}

/// The GRUB menu: report (programs nothing), run the configuration (the default when
/// there is one), report as JSON lines, and an entry that reads a command line from the
/// console. Every entry carries the modules. Serial and screen both show it, COM1 at
/// 115200.
pub fn grub_menu(c: &IsoContents, module_names: &[String]) -> String {
    let modules: String =
        module_names.iter().map(|n| format!("  module2 /boot/modules/{n} {n}\n")).collect();
    let cmd = if c.cmdline.is_empty() { String::new() } else { format!(" {}", c.cmdline) };
    let entry = |title: &str, args: &str| {
        format!("menuentry \"{title}\" {{\n  multiboot2 /boot/kernel {args}{cmd}\n{modules}  boot\n}}\n")
    };
    let run_default = c.config.is_some();
    let mut cfg = format!(
        "set timeout={}\nset default={}\nserial --unit=0 --speed=115200\n\
         terminal_input serial console\nterminal_output serial console\n",
        c.timeout,
        if run_default { 1 } else { 0 }
    );
    cfg.push_str(&entry("micro-hypervisor: report this machine (programs nothing)", "mode=report"));
    cfg.push_str(&entry(
        if run_default {
            "micro-hypervisor: run the configuration (partitions.cfg)"
        } else {
            "micro-hypervisor: run (no configuration here: QEMU default)"
        },
        "mode=run",
    ));
    cfg.push_str(&entry("micro-hypervisor: report as JSON lines", "report=json"));
    cfg.push_str(&format!(
        "menuentry \"micro-hypervisor: type a command line\" {{\n\
         \x20 echo \"e.g. mode=report console=com2 log=debug\"\n\
         \x20 echo -n \"hypervisor command line: \"\n\x20 read line\n  multiboot2 /boot/kernel $line{cmd}\n{modules}  boot\n}}\n"
    ));
    cfg
}

/// A GRUB hybrid BIOS/UEFI ISO with one entry that boots `kernel` with `cmdline`
/// straight away (the test suites' images).
pub fn iso(kernel: &Path, cmdline: &str, name: &str) -> Result<PathBuf, String> {
    let cfg = format!(
        "set timeout=0\nset default=0\nserial --unit=0 --speed=115200\nterminal_output serial console\n\
         menuentry \"micro-hypervisor\" {{\n  multiboot2 /boot/kernel {cmdline}\n  boot\n}}\n"
    );
    make_iso(kernel, &cfg, &[], name)
}

/// The USB-stick image: `kernel`, the configuration and modules of `c`, and the menu of
/// [`grub_menu`].
pub fn iso_with_menu(kernel: &Path, c: &IsoContents, name: &str) -> Result<PathBuf, String> {
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if let Some(cfg) = &c.config {
        files.push((cfg.clone(), "partitions.cfg".into()));
    }
    for m in &c.modules {
        let n = m
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace) && !n.contains('"'))
            .ok_or_else(|| {
                format!("{}: a module needs a plain file name (no spaces or quotes)", m.display())
            })?;
        if n.ends_with(".cfg") {
            return Err(format!(
                "{}: a .cfg module is the configuration: pass it with --config",
                m.display()
            ));
        }
        if files.iter().any(|(_, f)| f == n) {
            return Err(format!("two modules named {n}"));
        }
        files.push((m.clone(), n.to_string()));
    }
    let names: Vec<String> = files.iter().map(|(_, n)| n.clone()).collect();
    make_iso(kernel, &grub_menu(c, &names), &files, name)
}

fn make_iso(
    kernel: &Path,
    grub_cfg: &str,
    modules: &[(PathBuf, String)],
    name: &str,
) -> Result<PathBuf, String> {
    crate::tools::ensure(&crate::tools::GRUB.iter().collect::<Vec<_>>())?;
    let dir = kernel.with_file_name(format!("{name}-isodir"));
    let _ = std::fs::remove_dir_all(&dir);
    let grub = dir.join("boot/grub");
    std::fs::create_dir_all(&grub).map_err(|e| format!("{}: {e}", grub.display()))?;
    std::fs::copy(kernel, dir.join("boot/kernel")).map_err(|e| format!("copy kernel: {e}"))?;
    if !modules.is_empty() {
        std::fs::create_dir_all(dir.join("boot/modules"))
            .map_err(|e| format!("modules dir: {e}"))?;
    }
    for (src, n) in modules {
        std::fs::copy(src, dir.join("boot/modules").join(n))
            .map_err(|e| format!("{}: {e}", src.display()))?;
    }
    std::fs::write(grub.join("grub.cfg"), grub_cfg).map_err(|e| format!("grub.cfg: {e}"))?;
    let out = kernel.with_file_name(format!("{name}.iso"));
    let result = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&out)
        .arg(&dir)
        .output()
        .map_err(|e| format!("cannot run grub-mkrescue: {e}"))?;
    if !result.status.success() {
        return Err(format!("grub-mkrescue failed:\n{}", String::from_utf8_lossy(&result.stderr)));
    }
    Ok(out)
}
