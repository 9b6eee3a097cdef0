//! The hypervisor. Built for `x86_64-unknown-none` by `cargo xtask build`; on the host it
//! compiles to a stub that says so, which keeps `cargo build --workspace` green.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: build it with `cargo xtask build`");
}
