use super::*;
use crate::acpi::scope::ScopeKind;
use crate::acpi::testutil::{self as tu, dmar, drhd, fix_checksum, raw_structure, rmrr, scope};
use alloc::vec::Vec;

#[test]
fn decodes_the_qemu_table() {
    let t = tu::qemu_dmar();
    let d = Dmar::parse(&t).unwrap();
    assert_eq!(d.host_address_width(), 38);
    assert_eq!(d.address_width_bits(), 39);
    assert_eq!(d.flags(), DMAR_FLAG_INTR_REMAP);
    let units: Vec<_> = d.drhds().collect();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].base, 0xfed9_0000);
    assert_eq!(units[0].offset, 48);
    assert!(!units[0].include_pci_all());
    assert_eq!(units[0].register_size(), 4096);
    let scopes: Vec<_> = units[0].scopes.clone().collect();
    assert_eq!(scopes.len(), 3);
    assert_eq!(scopes[0].kind, ScopeKind::IoApic);
    assert_eq!(scopes[0].start_bus, 0xff);
    assert_eq!(scopes[2].path.hops().collect::<Vec<_>>(), [(2, 0)]);
    assert_eq!(scopes[2].offset, 48 + 16 + 16);
}

#[test]
fn decodes_every_structure_type_and_skips_unknown_ones() {
    let mut andd = alloc::vec![0, 0, 0, 7];
    andd.extend_from_slice(b"\\_SB.PCI0.I2C0\0");
    let mut rhsa = alloc::vec![0; 4];
    rhsa.extend_from_slice(&0xfbff_c000u64.to_le_bytes());
    rhsa.extend_from_slice(&3u32.to_le_bytes());
    let t = dmar(
        45,
        5,
        &[
            drhd(1, 2, 0xfed9_1000, &[scope(4, 0, 0, &[(0x1e, 6)])]),
            rmrr(0, 0x7c00_0000, 0x7c7f_ffff, &[scope(1, 0, 0, &[(0x14, 0)])]),
            raw_structure(2, &[1, 0, 0, 0], &[scope(2, 0, 0, &[(0x1c, 0)])]),
            raw_structure(3, &rhsa, &[]),
            raw_structure(4, &andd, &[]),
            raw_structure(5, &[1, 0, 0, 0], &[scope(1, 0, 0, &[(2, 0)])]),
            raw_structure(6, &[0, 0, 0, 0], &[scope(1, 0, 0, &[(2, 0)])]),
            raw_structure(0x4242, &[9, 9, 9, 9, 9, 9], &[]),
        ],
    );
    let d = Dmar::parse(&t).unwrap();
    let kinds: Vec<u16> = d.structures().map(|s| s.kind()).collect();
    assert_eq!(kinds, [0, 1, 2, 3, 4, 5, 6, 0x4242]);
    let all: Vec<_> = d.structures().collect();
    match &all[0] {
        DmarStructure::Drhd(x) => {
            assert!(x.include_pci_all());
            assert_eq!(x.segment, 2);
        }
        other => panic!("{other:?}"),
    }
    match &all[1] {
        DmarStructure::Rmrr(x) => assert_eq!((x.base, x.limit), (0x7c00_0000, 0x7c7f_ffff)),
        other => panic!("{other:?}"),
    }
    match &all[2] {
        DmarStructure::Atsr(x) => assert_eq!(x.flags & ATSR_ALL_PORTS, 1),
        other => panic!("{other:?}"),
    }
    match &all[3] {
        DmarStructure::Rhsa(x) => assert_eq!((x.base, x.proximity_domain), (0xfbff_c000, 3)),
        other => panic!("{other:?}"),
    }
    match &all[4] {
        DmarStructure::Andd(x) => {
            assert_eq!(x.device_number, 7);
            assert!(x.name.starts_with(b"\\_SB.PCI0.I2C0"));
        }
        other => panic!("{other:?}"),
    }
    match &all[5] {
        DmarStructure::Satc(x) => assert_eq!(x.flags & SATC_ATC_REQUIRED, 1),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&all[6], DmarStructure::Sidp(x) if x.scopes.clone().count() == 1));
    match &all[7] {
        DmarStructure::Unknown { kind, length, offset } => {
            assert_eq!((*kind, *length), (0x4242, 10));
            assert_eq!(*offset, t.len() - 10);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_offset_and_problem() {
    let good = tu::qemu_dmar();
    // Bad checksum: reported at the checksum byte, tolerated on request.
    let mut t = good.clone();
    t[40] ^= 1;
    let e = Dmar::parse(&t).unwrap_err();
    assert_eq!(e.offset, 9);
    assert!(matches!(e.kind, ErrorKind::BadChecksum { .. }));
    let lenient = Dmar::parse_with(&t, Checksum::Tolerate).unwrap();
    assert!(!lenient.checksum_ok());
    // Wrong signature.
    let e = Dmar::parse(b"IVRS\x30\0\0\0").unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadSignature { .. }));
    // Truncated data: length says more than supplied.
    let e = Dmar::parse(&good[..good.len() - 1]).unwrap_err();
    assert_eq!(
        (e.offset, e.kind),
        (4, ErrorKind::TableLengthExceedsData { stated: good.len(), available: good.len() - 1 })
    );
    // A structure length of 0 (would loop forever) at the DRHD's length field.
    let mut t = good.clone();
    t[50] = 0;
    t[51] = 0;
    fix_checksum(&mut t);
    let e = Dmar::parse(&t).unwrap_err();
    assert_eq!(e.offset, 50);
    assert!(matches!(e.kind, ErrorKind::StructureTooShort { what: "DRHD", stated: 0, .. }));
    // A structure that runs past the table.
    let mut t = good.clone();
    t[50] = 0xff;
    fix_checksum(&mut t);
    let e = Dmar::parse(&t).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::StructureOverrun { .. }));
    // A scope with an odd length, at its absolute offset.
    let mut t = good.clone();
    t[48 + 16 + 1] = 7;
    fix_checksum(&mut t);
    let e = Dmar::parse(&t).unwrap_err();
    assert_eq!(e.offset, 48 + 16 + 1);
    assert_eq!(e.kind, ErrorKind::OddScopePath { stated: 7 });
    // Table length below the fixed part.
    let mut t = good.clone();
    t[4] = 40;
    let e = Dmar::parse(&t).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::TableTooShort { stated: 40, minimum: 48 }));
    assert!(e.to_string().starts_with("at offset 0x4: "));
}

#[test]
fn ignores_bytes_past_the_stated_length() {
    let mut t = tu::qemu_dmar();
    t.extend_from_slice(&[0xff; 16]);
    let d = Dmar::parse(&t).unwrap();
    assert_eq!(d.bytes().len(), t.len() - 16);
    assert_eq!(d.structures().count(), 1);
}
