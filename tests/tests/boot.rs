//! The hypervisor boots on every supported path and machine: QEMU `-kernel` through
//! Multiboot1 and PVH, GRUB's Multiboot2 under SeaBIOS and OVMF, with either IOMMU or
//! none, and reports its in-kernel tests.

use tests::*;

const CORE: &str = "boot_info,frames,heap,acpi,pci";

#[test]
fn multiboot1_with_intel_iommu() {
    let out = boot(&machine(Iommu::Intel { aw_bits: None, caching_mode: false }, CORE));
    assert_passed(&out);
    assert_logged(&out, "boot: Multiboot1 loader");
    assert_logged(&out, " DMAR");
}

#[test]
fn multiboot1_with_amd_iommu() {
    let out = boot(&machine(Iommu::Amd { intremap: false }, CORE));
    assert_passed(&out);
    assert_logged(&out, " IVRS");
}

#[test]
fn multiboot1_without_iommu() {
    let out = boot(&machine(Iommu::None, CORE));
    assert_passed(&out);
    assert!(!out.log.contains(" DMAR") && !out.log.contains(" IVRS"), "{}", out.log);
}

#[test]
fn pvh_direct_boot() {
    let pvh = xtask::build::pvh_only(&kernel()).expect("PVH image");
    let mut m = machine(Iommu::Intel { aw_bits: None, caching_mode: false }, CORE);
    m.firmware = Firmware::DirectKernel(pvh);
    let out = boot(&m);
    assert_passed(&out);
    assert_logged(&out, "boot: PVH loader");
}

fn iso(name: &str) -> std::path::PathBuf {
    xtask::build::iso(&kernel(), &format!("test={CORE}"), name).expect("GRUB ISO")
}

#[test]
fn grub_iso_under_seabios() {
    let mut m = machine(Iommu::Intel { aw_bits: None, caching_mode: false }, CORE);
    m.firmware = Firmware::BiosIso(iso("test-bios"));
    let out = boot(&m);
    assert_passed(&out);
    assert_logged(&out, "boot: Multiboot2 loader");
}

#[test]
fn grub_iso_under_ovmf_takes_rsdp_from_multiboot2() {
    let mut m = machine(Iommu::Intel { aw_bits: None, caching_mode: false }, CORE);
    m.firmware = Firmware::UefiIso(iso("test-uefi"));
    let out = boot(&m);
    assert_passed(&out);
    assert_logged(&out, "boot: Multiboot2 loader");
    // Under UEFI the BIOS-area scan finds nothing: the RSDP must come from the tags.
    assert!(!out.log.contains("scanning the BIOS area"), "{}", out.log);
    assert_logged(&out, "acpi: revision 2 (XSDT)");
}

#[test]
fn deliberate_page_fault_fails_the_run_with_a_report() {
    let mut m = machine(Iommu::None, "boot_info");
    m.cmdline = "fault=pagefault".into();
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "EXCEPTION: Page fault (#PF), vector 14");
    assert_logged(&out, "CR2 0x0000004000000000");
}

#[test]
fn unknown_switch_gets_a_clear_message() {
    let mut m = machine(Iommu::None, "boot_info");
    m.cmdline = "frobnicate=1".into();
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "unknown command-line switch `frobnicate=1`");
}

#[test]
fn unknown_test_name_is_refused() {
    let out = boot(&machine(Iommu::None, "no_such_test"));
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "no test named `no_such_test`");
}
