//! The hypervisor boots on every supported path and machine: QEMU `-kernel` through
//! Multiboot1 and PVH, GRUB's Multiboot2 under SeaBIOS and OVMF, with either IOMMU or
//! none, and reports its in-kernel tests.

use tests::*;

const CORE: &str =
    "boot_info,frames,heap,acpi,pci,spurious_vector,wait_without_timer,mmio_out_of_window,domain_ids";

#[test]
fn multiboot1_with_intel_iommu() {
    let out = boot(&machine(Iommu::Intel { aw_bits: None, caching_mode: false }, CORE));
    assert_passed(&out);
    assert_logged(&out, "boot: Multiboot1 loader");
    assert_logged(&out, " DMAR");
    // The DMAR summary matches what QEMU generated: one DRHD, the root-bus edu in scope.
    assert_logged(&out, "DMAR: revision 1, host address width 39 bits");
    assert_logged(&out, "1 DRHD, 0 RMRR");
    assert_logged(&out, "DRHD 0: base 0xfed90000 segment 0");
    assert_logged(&out, "DRHD 0: scope endpoint 00:04.0");
    assert_logged(&out, "DRHD 0: scope ioapic id 0 ff:00.0");
    assert_logged(&out, "DMAR: dmar0: reg_base_addr fed90000 ver 1:0 cap ");
    assert_logged(&out, "DMAR: unit at 0xfed90000 enabled: 3-level tables");
}

#[test]
fn multiboot1_with_amd_iommu() {
    let out = boot(&machine(Iommu::Amd { intremap: false }, CORE));
    assert_passed(&out);
    assert_logged(&out, " IVRS");
    // QEMU 10.0 adds a type-0x11 block for the same unit, which the kernel prefers.
    if qemu_version(&out).0 >= 10 {
        assert_logged(&out, "2 IVHD (using type 0x11), 0 IVMD");
        assert_logged(&out, "IVHD 1: type 0x11 base 0xfed80000 segment 0");
    } else {
        assert_logged(&out, "1 IVHD (using type 0x10), 0 IVMD");
    }
    assert_logged(&out, "IVHD 0: type 0x10 base 0xfed80000 segment 0");
    assert_logged(&out, "IVHD 0: device 00:04.0");
    assert_logged(&out, "AMD-Vi: unit at 0xfed80000 enabled");
}

#[test]
fn multiboot1_without_iommu() {
    let out = boot(&machine(Iommu::None, CORE));
    assert_passed(&out);
    let tables = out.log.lines().find(|l| l.contains("acpi: tables:")).unwrap_or_default();
    assert!(!tables.contains("DMAR") && !tables.contains("IVRS"), "{}", out.log);
    assert_logged(&out, "iommu: no DMAR or IVRS table: no IOMMU");
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
