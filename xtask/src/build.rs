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
    }
    // A RUSTFLAGS meant for the host must not leak into the bare-metal build.
    cmd.env_remove("RUSTFLAGS");
    match guest {
        Some(g) => cmd.env("GUEST_ELF", g),
        None => cmd.env_remove("GUEST_ELF"),
    };
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

/// Builds a GRUB hybrid BIOS/UEFI ISO that boots `kernel` through Multiboot2 with
/// `cmdline`, and returns its path (`name`.iso next to the kernel).
pub fn iso(kernel: &Path, cmdline: &str, name: &str) -> Result<PathBuf, String> {
    crate::tools::ensure(&crate::tools::GRUB.iter().collect::<Vec<_>>())?;
    let dir = kernel.with_file_name(format!("{name}-isodir"));
    let grub = dir.join("boot/grub");
    std::fs::create_dir_all(&grub).map_err(|e| format!("{}: {e}", grub.display()))?;
    std::fs::copy(kernel, dir.join("boot/kernel")).map_err(|e| format!("copy kernel: {e}"))?;
    let cfg = format!(
        "set timeout=0\nset default=0\nserial --unit=0 --speed=115200\nterminal_output serial console\n\
         menuentry \"micro-hypervisor\" {{\n  multiboot2 /boot/kernel {cmdline}\n  boot\n}}\n"
    );
    std::fs::write(grub.join("grub.cfg"), cfg).map_err(|e| format!("grub.cfg: {e}"))?;
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
