//! IVHD device entries: which device ids an AMD IOMMU translates, and how.

use super::bytes::Window;
use super::error::{AcpiError, ErrorKind};

/// Fixed part of an ACPI HID entry (type, devid, data, HID, CID, UID format, UID length).
pub const ACPI_HID_FIXED_LEN: usize = 22;
/// Special-device variety: I/O APIC.
pub const SPECIAL_IOAPIC: u8 = 1;
/// Special-device variety: HPET.
pub const SPECIAL_HPET: u8 = 2;

/// An ACPI HID entry's unique id (_UID), in the format the entry states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiUid<'a> {
    /// Format 0: no UID.
    None,
    /// Format 1: an integer of the stated length (little-endian bytes).
    Integer(&'a [u8]),
    /// Format 2: a character string of the stated length.
    String(&'a [u8]),
    /// Any other format, with its bytes.
    Other {
        /// The format byte.
        format: u8,
        /// The UID bytes.
        bytes: &'a [u8],
    },
}

impl AcpiUid<'_> {
    /// The integer value of a format-1 UID of at most 8 bytes.
    pub fn integer(&self) -> Option<u64> {
        match self {
            AcpiUid::Integer(b) if b.len() <= 8 => {
                Some(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
            }
            _ => None,
        }
    }
}

/// What a device entry says, by entry type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryBody<'a> {
    /// 0x00: padding (4 bytes), to be stepped over.
    Padding,
    /// 0x01: applies to every device id.
    All,
    /// 0x02: one device.
    Select,
    /// 0x03: first device of a range closed by the next `RangeEnd`.
    RangeStart,
    /// 0x04: last device of the open range.
    RangeEnd,
    /// 0x42: one device that uses `alias` as its requester id.
    AliasSelect {
        /// The requester id the device's DMA carries.
        alias: u16,
    },
    /// 0x43: start of a range whose devices all use `alias` as requester id.
    AliasRangeStart {
        /// The requester id the devices' DMA carries.
        alias: u16,
    },
    /// 0x46: one device with extended settings.
    ExtendedSelect {
        /// Extended data (bit 31: ATS disabled).
        ext: u32,
    },
    /// 0x47: start of a range with extended settings.
    ExtendedRangeStart {
        /// Extended data.
        ext: u32,
    },
    /// 0x48: an I/O APIC or HPET and the device id its interrupts carry.
    Special {
        /// IOAPIC id or HPET number.
        handle: u8,
        /// Device id used by the special device.
        source: u16,
        /// `SPECIAL_IOAPIC` or `SPECIAL_HPET` (other values are reserved).
        variety: u8,
    },
    /// 0xF0: a device named by ACPI _HID/_CID/_UID (variable length).
    AcpiHid {
        /// _HID: 8 bytes (ASCII in practice, NUL padded).
        hid: [u8; 8],
        /// _CID: 8 bytes.
        cid: [u8; 8],
        /// The UID format byte.
        uid_format: u8,
        /// The UID length byte.
        uid_length: u8,
        /// _UID.
        uid: AcpiUid<'a>,
    },
    /// A reserved 4- or 8-byte entry type, skipped by its length.
    Reserved,
}

/// One IVHD device entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceEntry<'a> {
    /// Table offset of the entry.
    pub offset: usize,
    /// Entry type byte.
    pub kind: u8,
    /// Length in bytes.
    pub length: usize,
    /// Device id field (reserved, usually 0, for special entries).
    pub device_id: u16,
    /// DTE setting byte (INITPass, EIntPass, NMIPass, SysMgt, Lint0Pass, Lint1Pass).
    pub data: u8,
    /// The type-specific part.
    pub body: EntryBody<'a>,
}

/// Iterates over an IVHD's device entries.
pub type DeviceEntries<'a> = crate::acpi::bytes::Records<'a, DeviceEntry<'a>>;

impl<'a> DeviceEntries<'a> {
    /// Entries packed into `window` (everything after an IVHD's fixed part).
    pub fn new(window: Window<'a>) -> Self {
        Self::walk(window, 0, |w, at| read_entry(w, at).map(|e| (e, e.length)))
    }
}

/// The length of the entry whose type byte is `kind`, if fixed by its type.
pub fn fixed_entry_length(kind: u8) -> Option<usize> {
    (kind < 0x80).then(|| 4usize << (kind >> 6))
}

fn read_entry<'a>(w: &Window<'a>, at: usize) -> Result<DeviceEntry<'a>, AcpiError> {
    let kind = w.u8(at)?;
    let length = match fixed_entry_length(kind) {
        Some(len) => len,
        None if kind == 0xf0 => {
            let uid_len = w.sub(at, ACPI_HID_FIXED_LEN)?.u8(21)?;
            ACPI_HID_FIXED_LEN + usize::from(uid_len)
        }
        None => return Err(w.error(at, ErrorKind::UnknownVariableEntry { entry_type: kind })),
    };
    let remaining = w.len().saturating_sub(at);
    if length > remaining {
        return Err(w.error(
            at,
            ErrorKind::StructureOverrun { what: "IVHD device entry", stated: length, remaining },
        ));
    }
    let e = w.sub(at, length)?;
    let body = match kind {
        0x00 => EntryBody::Padding,
        0x01 => EntryBody::All,
        0x02 => EntryBody::Select,
        0x03 => EntryBody::RangeStart,
        0x04 => EntryBody::RangeEnd,
        0x42 => EntryBody::AliasSelect { alias: e.u16(5)? },
        0x43 => EntryBody::AliasRangeStart { alias: e.u16(5)? },
        0x46 => EntryBody::ExtendedSelect { ext: e.u32(4)? },
        0x47 => EntryBody::ExtendedRangeStart { ext: e.u32(4)? },
        0x48 => EntryBody::Special { handle: e.u8(4)?, source: e.u16(5)?, variety: e.u8(7)? },
        0xf0 => {
            let uid_format = e.u8(20)?;
            let uid_length = e.u8(21)?;
            let bytes = e.rest(ACPI_HID_FIXED_LEN).bytes();
            let uid = match uid_format {
                0 => AcpiUid::None,
                1 => AcpiUid::Integer(bytes),
                2 => AcpiUid::String(bytes),
                format => AcpiUid::Other { format, bytes },
            };
            EntryBody::AcpiHid { hid: e.array(4)?, cid: e.array(12)?, uid_format, uid_length, uid }
        }
        _ => EntryBody::Reserved,
    };
    Ok(DeviceEntry { offset: e.base(), kind, length, device_id: e.u16(1)?, data: e.u8(3)?, body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn decodes_every_entry_shape() {
        let mut b = Vec::new();
        b.extend_from_slice(&[0x03, 0x08, 0x00, 0x00]); // range start 00:01.0
        b.extend_from_slice(&[0x04, 0xfe, 0xff, 0x00]); // range end ff:1f.6
        b.extend_from_slice(&[0x00, 0x00, 0x00, 0x00]); // padding
        b.extend_from_slice(&[0x42, 0x00, 0x01, 0x00, 0x00, 0xa4, 0x00, 0x00]); // alias
        b.extend_from_slice(&[0x46, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80]); // ext
        b.extend_from_slice(&[0x48, 0x00, 0x00, 0xd7, 0x21, 0xa0, 0x00, 0x01]); // ioapic
        b.extend_from_slice(&[0xf0, 0xa5, 0x00, 0x40]);
        b.extend_from_slice(b"MSFT0201");
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&[0x01, 0x02, 0x34, 0x12]); // integer UID, 2 bytes
        let entries: Vec<_> = DeviceEntries::new(Window::new(&b, 0x100)).collect();
        assert_eq!(entries.len(), 7);
        assert_eq!(entries[1].device_id, 0xfffe);
        assert_eq!(entries[2].body, EntryBody::Padding);
        assert_eq!(entries[3].body, EntryBody::AliasSelect { alias: 0xa4 });
        assert_eq!(entries[3].device_id, 0x100);
        assert_eq!(entries[4].body, EntryBody::ExtendedSelect { ext: 0x8000_0000 });
        assert_eq!(
            entries[5].body,
            EntryBody::Special { handle: 0x21, source: 0xa0, variety: SPECIAL_IOAPIC }
        );
        assert_eq!(entries[6].offset, 0x100 + 36);
        assert_eq!(entries[6].length, 24);
        match entries[6].body {
            EntryBody::AcpiHid { hid, uid, .. } => {
                assert_eq!(&hid, b"MSFT0201");
                assert_eq!(uid.integer(), Some(0x1234));
            }
            other => panic!("not an ACPI HID entry: {other:?}"),
        }
    }

    #[test]
    fn rejects_overruns_and_unknown_variable_types() {
        let short_hid = [0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 9, b'x'];
        let err =
            DeviceEntries::new(Window::new(&short_hid, 0x50)).next_checked().unwrap().unwrap_err();
        assert_eq!(err.offset, 0x50);
        assert!(matches!(err.kind, ErrorKind::StructureOverrun { stated: 31, .. }));
        let unknown = [0x81, 0, 0, 0];
        let err = DeviceEntries::new(Window::new(&unknown, 0)).next_checked().unwrap().unwrap_err();
        assert_eq!(err.kind, ErrorKind::UnknownVariableEntry { entry_type: 0x81 });
        let eight = [0x48, 0, 0, 0, 0];
        assert!(DeviceEntries::new(Window::new(&eight, 0)).next_checked().unwrap().is_err());
    }
}
