//! Links the kernel non-PIE at its load address with the boot crate's linker script, but
//! only for the bare-metal target (host builds produce a stub and need nothing).
//! Also points `GUEST_ELF` at the guest program to embed: the path xtask passes, or an
//! empty placeholder (the kernel then says to build with `cargo xtask build`).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let script = std::path::Path::new(&dir).join("../boot/linker.ld");
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=--gc-sections");
        println!("cargo:rerun-if-changed={}", script.display());
        println!("cargo:rerun-if-changed=../boot/src/entry.S");
    }
    println!("cargo:rerun-if-env-changed=GUEST_ELF");
    let guest = match std::env::var("GUEST_ELF") {
        Ok(p) if std::path::Path::new(&p).is_file() => p,
        _ => {
            let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
            let empty = std::path::Path::new(&out).join("no-guest.elf");
            std::fs::write(&empty, b"").expect("write the empty guest placeholder");
            empty.display().to_string()
        }
    };
    println!("cargo:rerun-if-changed={guest}");
    println!("cargo:rustc-env=GUEST_ELF={guest}");
    println!("cargo:rerun-if-changed=build.rs");
}
