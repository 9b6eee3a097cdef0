use super::*;
use crate::acpi::ivrs_entry::{EntryBody, SPECIAL_IOAPIC};
use crate::acpi::testutil::{self as tu, alias_entry, entry4, fix_checksum, ivhd, ivmd, ivrs};
use alloc::vec::Vec;

#[test]
fn decodes_the_qemu_table() {
    let t = tu::qemu_ivrs();
    let r = Ivrs::parse(&t).unwrap();
    assert_eq!(r.ivinfo().pa_size(), 0x64);
    let hds: Vec<_> = r.ivhds().collect();
    assert_eq!(hds.len(), 1);
    let h = &hds[0];
    assert_eq!((h.kind, h.base, h.device_id, h.flags), (0x10, 0xfed8_0000, 0x10, 0xd1));
    assert_eq!(h.efr, None);
    let entries: Vec<_> = h.entries().collect();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].offset, 48 + 24);
    assert_eq!(
        entries[4].body,
        EntryBody::Special { handle: 0, source: 0xa0, variety: SPECIAL_IOAPIC }
    );
    assert_eq!(r.preferred_ivhd_type(), Some(0x10));
}

#[test]
fn decodes_efr_ivmd_and_skips_unknown_blocks() {
    let mut e = Vec::new();
    e.extend_from_slice(&entry4(3, 0x0008, 0));
    e.extend_from_slice(&entry4(4, 0xfffe, 0));
    e.extend_from_slice(&entry4(0, 0, 0));
    e.extend_from_slice(&alias_entry(0x43, 0xff00, 0x00a5));
    e.extend_from_slice(&entry4(4, 0xffff, 0));
    let mut unknown = alloc::vec![0x51, 0x08, 0x20, 0];
    unknown.extend_from_slice(&[0; 28]);
    let t = ivrs(
        0x0020_3043,
        &[
            ivhd(0x10, 2, 0xfdf0_0000, 0, 0, &e),
            ivhd(0x11, 2, 0xfdf0_0000, 0, 0x206d_73ef_2225_4ade, &e),
            ivmd(0x21, 0x08, 0x100, 0, 0xc9f4_2000, 0x26000),
            ivhd(0x40, 2, 0xfdf0_0000, 0, 0x206d_73ef_2225_4ade, &e),
            unknown,
            ivmd(0x22, 0x07, 0x0000, 0x0fff, 0x1000, 0x1000),
        ],
    );
    let r = Ivrs::parse(&t).unwrap();
    assert!(r.ivinfo().efr_supported());
    assert_eq!(r.preferred_ivhd_type(), Some(0x40));
    let blocks: Vec<_> = r.blocks().collect();
    assert_eq!(blocks.len(), 6);
    match &blocks[1] {
        IvrsBlock::Hardware(h) => {
            assert_eq!(h.efr, Some(0x206d_73ef_2225_4ade));
            assert_eq!(h.entries().count(), 5);
        }
        other => panic!("{other:?}"),
    }
    match &blocks[2] {
        IvrsBlock::Memory(m) => {
            assert_eq!(m.target(), IvmdTarget::Device(0x100));
            assert_eq!((m.start, m.size), (0xc9f4_2000, 0x26000));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(blocks[4], IvrsBlock::Unknown { kind: 0x51, length: 32, .. }));
    match &blocks[5] {
        IvrsBlock::Memory(m) => assert_eq!(m.target(), IvmdTarget::Range(0, 0xfff)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_name_offset_and_problem() {
    let good = tu::qemu_ivrs();
    // IVHD length below its fixed part.
    let mut t = good.clone();
    t[50] = 20;
    t[51] = 0;
    fix_checksum(&mut t);
    let e = Ivrs::parse(&t).unwrap_err();
    assert_eq!(e.offset, 50);
    assert!(matches!(e.kind, ErrorKind::StructureTooShort { stated: 20, minimum: 24, .. }));
    // An 8-byte entry cut off by the end of its block.
    let mut e = Vec::new();
    e.extend_from_slice(&entry4(2, 8, 0));
    e.extend_from_slice(&[0x48, 0, 0, 0]);
    let t = ivrs(0, &[ivhd(0x10, 2, 0xfed8_0000, 0, 0, &e)]);
    let err = Ivrs::parse(&t).unwrap_err();
    assert_eq!(err.offset, 48 + 24 + 4);
    assert!(matches!(err.kind, ErrorKind::StructureOverrun { stated: 8, remaining: 4, .. }));
    // A block type 0x11 with the 0x10 length.
    let t = ivrs(0, &[ivhd(0x10, 2, 0xfed8_0000, 0, 0, &[])]);
    let mut t2 = t.clone();
    t2[48] = 0x11;
    fix_checksum(&mut t2);
    assert!(matches!(
        Ivrs::parse(&t2).unwrap_err().kind,
        ErrorKind::StructureTooShort { minimum: 40, .. }
    ));
}
