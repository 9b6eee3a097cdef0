use super::*;
use crate::acpi::testutil as tu;

#[test]
fn qemu_dmar_summary_is_stable() {
    let t = tu::qemu_dmar();
    let d = Dmar::parse(&t).unwrap();
    assert_eq!(
        dmar_summary(&d),
        [
            "DMAR: revision 1, host address width 39 bits, flags 0x1 (intr-remap), 1 DRHD, 0 RMRR, 0 ATSR, 0 RHSA, 0 ANDD, 0 SATC, 0 SIDP",
            "DRHD 0: base 0xfed90000 segment 0 size 4KiB flags 0x0 scopes 3",
            "DRHD 0: scope ioapic id 0 ff:00.0",
            "DRHD 0: scope endpoint 00:01.0",
            "DRHD 0: scope endpoint 00:02.0",
        ]
    );
    assert_eq!(DmarSummary(&d).to_string().lines().count(), 5);
}

#[test]
fn qemu_ivrs_summary_is_stable() {
    let t = tu::qemu_ivrs();
    let r = Ivrs::parse(&t).unwrap();
    assert_eq!(
        ivrs_summary(&r),
        [
            "IVRS: revision 2, ivinfo 0x296440 (va 82 bits, pa 100 bits, gva-size 2), 1 IVHD (using type 0x10), 0 IVMD",
            "IVHD 0: type 0x10 base 0xfed80000 segment 0 devid 00:02.0 cap 0x40 flags 0xd1 info 0x0 attributes 0x80000000",
            "IVHD 0: device 00:01.0 data 0x0",
            "IVHD 0: device 00:02.0 data 0x0",
            "IVHD 0: devices 01:00.0-01:1f.7 data 0x0",
            "IVHD 0: ioapic 0 devid 00:14.0 data 0xd7",
        ]
    );
}

#[test]
fn multi_hop_paths_hids_ivmds_and_unknowns_are_shown() {
    let t = tu::dmar(
        38,
        0,
        &[
            tu::drhd(1, 0, 0xfed9_1000, &[tu::scope(1, 0, 0, &[(0x1c, 4), (0, 2)])]),
            tu::raw_structure(7, &[0; 4], &[]),
        ],
    );
    let d = Dmar::parse(&t).unwrap();
    let s = dmar_summary(&d);
    assert_eq!(
        s[1],
        "DRHD 0: base 0xfed91000 segment 0 size 4KiB flags 0x1 include-pci-all scopes 1"
    );
    assert_eq!(s[2], "DRHD 0: scope endpoint 00:1c.4/00.2");
    assert_eq!(s[3], "DMAR: unknown structure type 0x7 at 0x4a length 8 skipped");

    let mut e = alloc::vec![0xf0, 0xa5, 0x00, 0x40];
    e.extend_from_slice(b"AMDI0020");
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&[2, 9]);
    e.extend_from_slice(b"\\_SB.FUR0");
    let t = tu::ivrs(
        0,
        &[
            tu::ivhd(0x40, 2, 0xfd00_0000, 0, 0x1234, &e),
            tu::ivmd(0x21, 0x08, 0x100, 0, 0xc9f4_2000, 0x26000),
            alloc::vec![0x51, 0, 4, 0],
        ],
    );
    let r = Ivrs::parse(&t).unwrap();
    let s = ivrs_summary(&r);
    assert!(s[1].ends_with("efr 0x1234"), "{}", s[1]);
    assert_eq!(s[2], "IVHD 0: acpi-hid \"AMDI0020\" uid \"\\_SB.FUR0\" devid 00:14.5");
    assert_eq!(
        s[3],
        "IVMD 0: type 0x21 device 01:00.0 range 0xc9f42000+0x26000 flags 0x8 (exclusion)"
    );
    assert_eq!(s[4], "IVRS: unknown block type 0x51 at 0x97 length 4 skipped");
}
