//! The USB-stick image of `cargo xtask iso`: GRUB (SeaBIOS here) shows the menu on the
//! serial console and boots its default entry after the timeout: the configuration it
//! carries when there is one (as boot module `partitions.cfg`, with a guest module beside
//! it), the report otherwise. Machine: q35 with intel-iommu and edu at 00:04.0, 00:05.0.

use std::path::PathBuf;
use tests::*;
use xtask::build::{iso_with_menu, IsoContents};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/iso-test");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

fn iso_machine(contents: &IsoContents, name: &str) -> Machine {
    let iso = iso_with_menu(&kernel(), contents, name).expect("ISO");
    let mut m = Machine::new(&kernel(), Iommu::Intel { aw_bits: None, caching_mode: false });
    m.firmware = Firmware::BiosIso(iso);
    m.edu = vec![Edu { slot: 4 }, Edu { slot: 5 }];
    m
}

#[test]
fn iso_with_a_configuration_runs_it_by_default() {
    let cfg = scratch("two.cfg");
    std::fs::write(
        &cfg,
        "partition alpha\n  memory 8M\n  device 00:04.0\npartition beta\n  memory 6M\n  backing 2m\n  image module:guest.elf\n  device 00:05.0\n",
    )
    .expect("cfg");
    let guest = scratch("guest.elf");
    std::fs::copy(xtask::build::guest(false).expect("guest"), &guest).expect("guest copy");
    let contents =
        IsoContents { config: Some(cfg), modules: vec![guest], timeout: 1, ..Default::default() };
    let out = boot(&iso_machine(&contents, "test-iso-run"));
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    for entry in [
        "report this machine (programs nothing)",
        "run the configuration (partitions.cfg)",
        "type a command line",
    ] {
        assert_logged(&out, entry);
    }
    assert_logged(&out, "boot: Multiboot2 loader, command line \"mode=run\"");
    assert_logged(&out, "partitions: configuration from the module partitions.cfg");
    assert_logged(&out, "partition beta: created, 6 MiB 2m-backed");
    assert_logged(&out, "partitions: the device-assignment story held");
}

#[test]
fn iso_without_a_configuration_reports_by_default() {
    let contents = IsoContents { timeout: 1, ..Default::default() };
    let out = boot(&iso_machine(&contents, "test-iso-report"));
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, "run (no configuration here: QEMU default)");
    assert_logged(&out, "boot: Multiboot2 loader, command line \"mode=report\"");
    assert_logged(&out, "==== machine report (mode=report: nothing is programmed) ====");
    assert_logged(&out, "report: done: ");
}
