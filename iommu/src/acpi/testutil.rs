//! Builders for synthetic DMAR/IVRS tables in unit tests (lengths and checksum filled in).

use alloc::vec::Vec;

fn table(signature: &[u8; 4], revision: u8, after_header: &[u8], body: &[Vec<u8>]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(signature);
    t.extend_from_slice(&[0; 4]); // length, patched below
    t.push(revision);
    t.push(0); // checksum, patched below
    t.extend_from_slice(b"BOCHS ");
    t.extend_from_slice(b"BXPC    ");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(b"BXPC");
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(after_header);
    for b in body {
        t.extend_from_slice(b);
    }
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    fix_checksum(&mut t);
    t
}

/// Recomputes the checksum byte so the table sums to zero.
pub fn fix_checksum(t: &mut [u8]) {
    if t.len() < 10 {
        return;
    }
    t[9] = 0;
    let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
}

/// A DMAR with the given host address width field, flags and structures.
pub fn dmar(haw: u8, flags: u8, structures: &[Vec<u8>]) -> Vec<u8> {
    let mut extra = alloc::vec![haw, flags];
    extra.extend_from_slice(&[0; 10]);
    table(b"DMAR", 1, &extra, structures)
}

/// A device scope entry.
pub fn scope(kind: u8, enumeration_id: u8, bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
    let mut s = alloc::vec![kind, (6 + 2 * path.len()) as u8, 0, 0, enumeration_id, bus];
    for (d, f) in path {
        s.push(*d);
        s.push(*f);
    }
    s
}

fn structure(kind: u16, fixed: &[u8], scopes: &[Vec<u8>]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&kind.to_le_bytes());
    s.extend_from_slice(&[0, 0]);
    s.extend_from_slice(fixed);
    for sc in scopes {
        s.extend_from_slice(sc);
    }
    let len = s.len() as u16;
    s[2..4].copy_from_slice(&len.to_le_bytes());
    s
}

/// A DRHD.
pub fn drhd(flags: u8, segment: u16, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
    let mut f = alloc::vec![flags, 0];
    f.extend_from_slice(&segment.to_le_bytes());
    f.extend_from_slice(&base.to_le_bytes());
    structure(0, &f, scopes)
}

/// An RMRR.
pub fn rmrr(segment: u16, base: u64, limit: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
    let mut f = alloc::vec![0, 0];
    f.extend_from_slice(&segment.to_le_bytes());
    f.extend_from_slice(&base.to_le_bytes());
    f.extend_from_slice(&limit.to_le_bytes());
    structure(1, &f, scopes)
}

/// Any structure by type with raw fixed bytes after the 4-byte type/length.
pub fn raw_structure(kind: u16, fixed: &[u8], scopes: &[Vec<u8>]) -> Vec<u8> {
    structure(kind, fixed, scopes)
}

/// An IVRS with the given IVinfo and blocks.
pub fn ivrs(ivinfo: u32, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut extra = ivinfo.to_le_bytes().to_vec();
    extra.extend_from_slice(&[0; 8]);
    table(b"IVRS", 2, &extra, blocks)
}

/// An IVHD block of `kind` (0x10, 0x11 or 0x40) with raw entry bytes.
pub fn ivhd(
    kind: u8,
    device_id: u16,
    base: u64,
    segment: u16,
    efr: u64,
    entries: &[u8],
) -> Vec<u8> {
    let mut b = alloc::vec![kind, 0xd1, 0, 0];
    b.extend_from_slice(&device_id.to_le_bytes());
    b.extend_from_slice(&0x40u16.to_le_bytes());
    b.extend_from_slice(&base.to_le_bytes());
    b.extend_from_slice(&segment.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0x8000_0000u32.to_le_bytes());
    if kind != 0x10 {
        b.extend_from_slice(&efr.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
    }
    b.extend_from_slice(entries);
    let len = b.len() as u16;
    b[2..4].copy_from_slice(&len.to_le_bytes());
    b
}

/// An IVMD block.
pub fn ivmd(kind: u8, flags: u8, device_id: u16, aux: u16, start: u64, size: u64) -> Vec<u8> {
    let mut b = alloc::vec![kind, flags, 32, 0];
    b.extend_from_slice(&device_id.to_le_bytes());
    b.extend_from_slice(&aux.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&start.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b
}

/// A 4-byte device entry.
pub fn entry4(kind: u8, device_id: u16, data: u8) -> [u8; 4] {
    let d = device_id.to_le_bytes();
    [kind, d[0], d[1], data]
}

/// An 8-byte alias entry (0x42 / 0x43).
pub fn alias_entry(kind: u8, device_id: u16, alias: u16) -> [u8; 8] {
    let d = device_id.to_le_bytes();
    let a = alias.to_le_bytes();
    [kind, d[0], d[1], 0, 0, a[0], a[1], 0]
}

/// A special-device entry (0x48).
pub fn special_entry(handle: u8, source: u16, variety: u8) -> [u8; 8] {
    let s = source.to_le_bytes();
    [0x48, 0, 0, 0xd7, handle, s[0], s[1], variety]
}

/// The DMAR QEMU builds for `-device intel-iommu` with devices 00:01.0 and 00:02.0.
pub fn qemu_dmar() -> Vec<u8> {
    dmar(
        38,
        1,
        &[drhd(
            0,
            0,
            0xfed9_0000,
            &[scope(3, 0, 0xff, &[(0, 0)]), scope(1, 0, 0, &[(1, 0)]), scope(1, 0, 0, &[(2, 0)])],
        )],
    )
}

/// An IVRS like QEMU's `-device amd-iommu`: one IVHD 0x10 at 0xfed80000.
pub fn qemu_ivrs() -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&entry4(2, 0x0008, 0));
    e.extend_from_slice(&entry4(2, 0x0010, 0));
    e.extend_from_slice(&entry4(3, 0x0100, 0));
    e.extend_from_slice(&entry4(4, 0x01ff, 0));
    e.extend_from_slice(&special_entry(0, 0x00a0, 1));
    ivrs(0x0029_6440, &[ivhd(0x10, 0x0010, 0xfed8_0000, 0, 0, &e)])
}
