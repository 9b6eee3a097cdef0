use super::*;
use crate::acpi::pci::PciBridge;
use crate::acpi::resolve::{DmarUnits, IvrsUnits};
use crate::acpi::testutil::{self as tu, dmar, drhd, entry4, ivhd, ivmd, ivrs, rmrr, scope};
use crate::acpi::{Dmar, Ivrs};
use alloc::string::ToString;
use alloc::vec::Vec;

const NO_BRIDGES: &[PciBridge] = &[];

#[test]
fn qemu_tables_are_clean() {
    let t = tu::qemu_dmar();
    let d = Dmar::parse(&t).unwrap();
    let mut units = DmarUnits::new(&d, NO_BRIDGES);
    let reserved = [MemRange { start: 0, end: 0 }];
    let facts = PlatformFacts { reserved: Some(&reserved), ioapic_ids: Some(&[0]) };
    assert_eq!(check_dmar(&d, &mut units, &facts), SanityReport::default());
    let t = tu::qemu_ivrs();
    let r = Ivrs::parse(&t).unwrap();
    let mut units = IvrsUnits::new(&r);
    assert_eq!(check_ivrs(&r, &mut units, &facts), SanityReport::default());
}

#[test]
fn dmar_firmware_bugs_are_reported_and_bad_units_disabled() {
    let t = dmar(
        38,
        1,
        &[
            drhd(0, 0, 0, &[scope(1, 0, 0, &[(3, 0)])]),
            drhd(0, 0, 0xfed9_0000, &[scope(1, 0, 0, &[(2, 0)])]),
            drhd(0, 0, 0xfed9_0800, &[scope(1, 0, 0, &[(4, 0)])]),
            drhd(1, 0, 0xfed9_1000, &[scope(1, 0, 0, &[(2, 0)]), scope(1, 0, 0, &[])]),
            rmrr(0, 0x7c00_0000, 0x7c7f_ffff, &[scope(1, 0, 0, &[(2, 0)])]),
            rmrr(0, 0x7c40_0000, 0x7c4f_ffff, &[]),
            rmrr(0, 0x9000_0010, 0x9000_0fff, &[]),
            rmrr(0, 0x5000, 0x4fff, &[]),
            tu::raw_structure(9, &[0, 0, 0, 0], &[]),
        ],
    );
    let d = Dmar::parse(&t).unwrap();
    let mut units = DmarUnits::new(&d, NO_BRIDGES);
    let reserved = [
        MemRange { start: 0x7c00_0000, end: 0x7c3f_ffff },
        MemRange { start: 0x7c40_0000, end: 0x7cff_ffff },
    ];
    let facts = PlatformFacts { reserved: Some(&reserved), ioapic_ids: Some(&[2]) };
    let r = check_dmar(&d, &mut units, &facts);
    let text: Vec<_> = r.warnings.iter().map(|w| w.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert_eq!(r.unusable, [0, 2], "{text:?}");
    assert!(!units.units[0].usable && units.units[1].usable && !units.units[2].usable);
    assert!(has("[Firmware Bug]: DRHD 0 (base 0x0): register base is 0"));
    assert!(has("DRHD 2 (base 0xfed90800): register base is 0, all ones or unaligned"));
    assert!(has(
        "[Firmware Warn]: device 0000:00:02.0 claimed by DRHD 1 (base 0xfed90000) and DRHD 3"
    ));
    assert!(has("DRHD 3 (base 0xfed91000): device scope at"));
    assert!(has("RMRR 1 0x7c400000-0x7c4fffff overlaps RMRR 0"));
    assert!(has("RMRR 2: range 0x90000010-0x90000fff is not 4 KiB aligned"));
    assert!(has("RMRR 2: no firmware reserved region can cover"));
    assert!(has("RMRR 3: bad range"));
    assert!(!has("RMRR 0: no firmware reserved"), "union of reserved ranges covers RMRR 0");
    assert!(has("[Firmware Info]: DMAR: unknown structure type 0x9"));
    assert!(has("IOAPIC 2 has no remapping unit in DMAR"));
    assert!(r.interrupt_remapping_unusable);
}

#[test]
fn overlapping_register_windows_disable_the_later_unit() {
    let t = dmar(38, 0, &[drhd(0, 0, 0xfed9_0000, &[]), drhd(1, 0, 0xfed9_0000, &[])]);
    let d = Dmar::parse(&t).unwrap();
    let mut units = DmarUnits::new(&d, NO_BRIDGES);
    let r = check_dmar(&d, &mut units, &PlatformFacts::default());
    assert_eq!(r.unusable, [1]);
    assert!(matches!(r.warnings[0], FirmwareWarning::RegisterOverlap { .. }));
}

#[test]
fn ivrs_firmware_bugs_are_reported() {
    let mut a = Vec::new();
    a.extend_from_slice(&entry4(3, 0x0000, 0));
    a.extend_from_slice(&entry4(4, 0x1fff, 0));
    a.extend_from_slice(&tu::special_entry(0x21, 0x00a0, 1));
    let mut b = Vec::new();
    b.extend_from_slice(&entry4(3, 0x1000, 0));
    b.extend_from_slice(&entry4(4, 0x3fff, 0));
    b.extend_from_slice(&entry4(3, 0x5000, 0));
    let t = ivrs(
        0,
        &[
            ivhd(0x11, 2, 0xfd00_0000, 0, 0, &a),
            ivhd(0x11, 0x4002, 0xfd00_2000, 0, 0, &b),
            ivhd(0x11, 0x8002, u64::MAX, 0, 0, &[]),
            ivmd(0x20, 1, 0, 0, 0x1000, 0x2000),
            ivmd(0x21, 1, 8, 0, 0x2000, 0x1000),
            ivmd(0x21, 1, 8, 0, 0x2000, 0),
        ],
    );
    let r = Ivrs::parse(&t).unwrap();
    let mut units = IvrsUnits::new(&r);
    let facts = PlatformFacts { reserved: None, ioapic_ids: Some(&[0x21, 0x22]) };
    let rep = check_ivrs(&r, &mut units, &facts);
    let text: Vec<_> = rep.warnings.iter().map(|w| w.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert_eq!(rep.unusable, [1, 2], "{text:?}");
    assert!(has("IVHD 1 (base 0xfd002000): register window overlaps IVHD 0"));
    assert!(has("IVHD 2 (base 0xffffffffffffffff): register base is 0"));
    assert!(has("IVHD 1 (base 0xfd002000): device range start at"));
    assert!(has("IVMD 1 0x2000-0x2fff overlaps IVMD 0"));
    assert!(has("IVMD 2: bad range"));
    assert!(has("[Firmware Bug]: IOAPIC[34] not in IVRS table"));
    assert!(!has("IOAPIC[33]"));
    assert!(rep.interrupt_remapping_unusable);
    // Disabled units no longer translate, and a device a disabled unit claims too has no
    // route (which of the two is on its path is unknown).
    assert_eq!(units.translating_unit(0, 0x3000), None);
    assert_eq!(units.translating_unit(0, 0x1000), None);
    assert_eq!(units.translating_unit(0, 0x0800).map(|t| t.unit), Some(0));
}

#[test]
fn two_units_claiming_one_device_is_reported() {
    let mut a = Vec::new();
    a.extend_from_slice(&entry4(3, 0x0000, 0));
    a.extend_from_slice(&entry4(4, 0x1fff, 0));
    let mut b = Vec::new();
    b.extend_from_slice(&entry4(2, 0x1008, 0));
    let t =
        ivrs(0, &[ivhd(0x10, 2, 0xfd00_0000, 0, 0, &a), ivhd(0x10, 0x4002, 0xfd10_0000, 0, 0, &b)]);
    let r = Ivrs::parse(&t).unwrap();
    let mut units = IvrsUnits::new(&r);
    let rep = check_ivrs(&r, &mut units, &PlatformFacts::default());
    assert_eq!(
        rep.warnings,
        [FirmwareWarning::DeviceClaimedTwice {
            segment: 0,
            device_id: 0x1008,
            first: UnitRef::Ivhd { index: 0, base: 0xfd00_0000 },
            second: UnitRef::Ivhd { index: 1, base: 0xfd10_0000 },
        }]
    );
    assert!(rep.unusable.is_empty());
}
