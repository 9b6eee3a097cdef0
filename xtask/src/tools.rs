//! First-run set-up: the Rust target and the host tools (QEMU, GRUB, OVMF).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A host tool the project needs, and the Debian package that provides it.
pub struct Tool {
    /// Executable name (or absolute file path for data files like OVMF).
    pub name: &'static str,
    /// Debian package(s) providing it.
    pub packages: &'static [&'static str],
}

/// QEMU for every boot.
pub const QEMU: Tool = Tool { name: "qemu-system-x86_64", packages: &["qemu-system-x86"] };
/// GRUB's ISO maker and what it needs (BIOS and UEFI images, xorriso, mtools).
pub const GRUB: &[Tool] = &[
    Tool { name: "grub-mkrescue", packages: &["grub-pc-bin", "grub-efi-amd64-bin", "grub-common"] },
    Tool { name: "/usr/lib/grub/i386-pc", packages: &["grub-pc-bin"] },
    Tool { name: "/usr/lib/grub/x86_64-efi", packages: &["grub-efi-amd64-bin"] },
    Tool { name: "xorriso", packages: &["xorriso"] },
    Tool { name: "mformat", packages: &["mtools"] },
];
/// UEFI firmware for QEMU.
pub const OVMF: Tool = Tool { name: "/usr/share/OVMF/OVMF_CODE_4M.fd", packages: &["ovmf"] };

/// The QEMU binary: `$QEMU` if set, else `qemu-system-x86_64` from PATH.
pub fn qemu_binary() -> PathBuf {
    std::env::var_os("QEMU").map_or_else(|| PathBuf::from(QEMU.name), PathBuf::from)
}

fn present(name: &str) -> bool {
    if name.starts_with('/') {
        return Path::new(name).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Makes sure every tool in `tools` is there. Missing ones are installed with apt-get
/// when we are root on Debian; otherwise one message names the packages to install.
pub fn ensure(tools: &[&Tool]) -> Result<(), String> {
    let missing: Vec<&&Tool> = tools
        .iter()
        .filter(|t| {
            // An explicitly chosen QEMU is the user's business.
            !(present(t.name) || t.name == QEMU.name && std::env::var_os("QEMU").is_some())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut pkgs: Vec<&str> = missing.iter().flat_map(|t| t.packages.iter().copied()).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    let names: Vec<&str> = missing.iter().map(|t| t.name).collect();
    if is_root() && present("apt-get") {
        eprintln!("xtask: installing {} (missing: {})", pkgs.join(" "), names.join(", "));
        // apt-get and dpkg talk a lot: their output is kept and shown only on failure.
        // `--no-remove` makes apt refuse any plan that would remove a package.
        let quiet = |args: &[&str]| {
            Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").output()
        };
        eprintln!("xtask:   apt-get update");
        let update = quiet(&["update", "-qq"]);
        eprintln!("xtask:   apt-get install {}", pkgs.join(" "));
        let mut install_args =
            vec!["install", "-y", "-qq", "--no-install-recommends", "--no-remove"];
        install_args.extend(pkgs.iter().copied());
        let install = quiet(&install_args);
        match &install {
            Ok(o) if o.status.success() && missing.iter().all(|t| present(t.name)) => return Ok(()),
            Ok(o) => eprintln!(
                "xtask: apt-get install failed:\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("xtask: cannot run apt-get: {e}"),
        }
        if let Some(o) = update.as_ref().ok().filter(|o| !o.status.success()) {
            eprintln!("xtask: apt-get update failed:\n{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    Err(format!(
        "missing {}: install them with `sudo apt-get install {}`",
        names.join(", "),
        pkgs.join(" ")
    ))
}

/// Adds the bare-metal Rust target with rustup when it is missing.
pub fn ensure_rust_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == crate::build::TARGET)
    {
        return Ok(());
    }
    eprintln!("xtask: adding the Rust target {}", crate::build::TARGET);
    let ok = Command::new("rustup")
        .args(["target", "add", crate::build::TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "could not add the Rust target: run `rustup target add {}`",
            crate::build::TARGET
        ))
    }
}
