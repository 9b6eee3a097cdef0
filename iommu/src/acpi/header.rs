//! The common ACPI system description table header and whole-table validation.

use super::bytes::Window;
use super::error::{AcpiError, ErrorKind};

/// Length of the standard ACPI table header.
pub const SDT_HEADER_LEN: usize = 36;

/// The standard 36-byte header every ACPI table starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdtHeader {
    /// Table signature ("DMAR", "IVRS").
    pub signature: [u8; 4],
    /// Length of the whole table in bytes, header included.
    pub length: u32,
    /// Table revision.
    pub revision: u8,
    /// Checksum byte (makes all bytes sum to zero).
    pub checksum: u8,
    /// OEM identifier.
    pub oem_id: [u8; 6],
    /// OEM table identifier.
    pub oem_table_id: [u8; 8],
    /// OEM revision.
    pub oem_revision: u32,
    /// Identifier of the tool that built the table.
    pub creator_id: [u8; 4],
    /// Revision of the tool that built the table.
    pub creator_revision: u32,
}

impl SdtHeader {
    /// Reads the header at the start of `w`.
    pub fn read(w: &Window<'_>) -> Result<Self, AcpiError> {
        Ok(SdtHeader {
            signature: w.array(0)?,
            length: w.u32(4)?,
            revision: w.u8(8)?,
            checksum: w.u8(9)?,
            oem_id: w.array(10)?,
            oem_table_id: w.array(16)?,
            oem_revision: w.u32(24)?,
            creator_id: w.array(28)?,
            creator_revision: w.u32(32)?,
        })
    }
}

/// Whether parsing insists on a correct checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// A wrong checksum is an error (what boot uses).
    Enforce,
    /// A wrong checksum is recorded but tolerated (bring-up tools, fuzzing past it).
    Tolerate,
}

/// A table whose signature, length and (optionally) checksum have been checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedTable<'a> {
    pub window: Window<'a>,
    pub header: SdtHeader,
    pub checksum_ok: bool,
}

/// Checks signature, that the stated length covers `minimum` bytes and fits in `bytes`,
/// and the checksum; returns a window of exactly the stated length.
pub(crate) fn check_table<'a>(
    bytes: &'a [u8],
    signature: [u8; 4],
    minimum: usize,
    checksum: Checksum,
) -> Result<CheckedTable<'a>, AcpiError> {
    let all = Window::new(bytes, 0);
    let found: [u8; 4] = all.array(0)?;
    if found != signature {
        return Err(all.error(0, ErrorKind::BadSignature { found, expected: signature }));
    }
    let stated = all.u32(4)? as usize;
    if stated < minimum {
        return Err(all.error(4, ErrorKind::TableTooShort { stated, minimum }));
    }
    if stated > bytes.len() {
        return Err(
            all.error(4, ErrorKind::TableLengthExceedsData { stated, available: bytes.len() })
        );
    }
    let window = all.sub(0, stated)?;
    let header = SdtHeader::read(&window)?;
    let sum = window.bytes().iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
    if sum != 0 && checksum == Checksum::Enforce {
        return Err(window.error(9, ErrorKind::BadChecksum { sum }));
    }
    Ok(CheckedTable { window, header, checksum_ok: sum == 0 })
}
