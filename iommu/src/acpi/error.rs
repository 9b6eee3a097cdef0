//! The one error type of the ACPI parsers: where in the table, and what is wrong there.

use core::fmt;

/// A malformed table: `offset` is the byte offset from the start of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiError {
    /// Byte offset from the start of the table where the problem was found.
    pub offset: usize,
    /// What is wrong there.
    pub kind: ErrorKind,
}

/// The problems a table can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A field or structure extends past the end of the data.
    Truncated {
        /// Bytes the field or structure needs.
        needed: usize,
        /// Bytes left from its offset to the end of the enclosing data.
        available: usize,
    },
    /// The signature is not the one this parser reads.
    BadSignature {
        /// The four signature bytes found.
        found: [u8; 4],
        /// The signature expected.
        expected: [u8; 4],
    },
    /// The header's length field is smaller than the fixed part of the table.
    TableTooShort {
        /// The stated length.
        stated: usize,
        /// The smallest valid length.
        minimum: usize,
    },
    /// The header's length field is larger than the bytes supplied.
    TableLengthExceedsData {
        /// The stated length.
        stated: usize,
        /// The bytes supplied.
        available: usize,
    },
    /// The bytes of the table do not sum to zero.
    BadChecksum {
        /// The sum of all bytes modulo 256 (zero for a valid table).
        sum: u8,
    },
    /// A structure's length field is smaller than that structure's fixed part.
    StructureTooShort {
        /// Which structure, in words ("DRHD", "device scope", "IVHD type 0x11").
        what: &'static str,
        /// The stated length.
        stated: usize,
        /// The smallest valid length.
        minimum: usize,
    },
    /// A structure's length field runs past the end of its enclosing table or block.
    StructureOverrun {
        /// Which structure, in words.
        what: &'static str,
        /// The stated length.
        stated: usize,
        /// Bytes left in the enclosing table or block.
        remaining: usize,
    },
    /// A device scope's PCI path is not a whole number of (device, function) pairs.
    OddScopePath {
        /// The scope's stated length.
        stated: usize,
    },
    /// An IVHD device entry of a variable-length type whose length this parser cannot know.
    UnknownVariableEntry {
        /// The entry type byte.
        entry_type: u8,
    },
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ErrorKind::Truncated { needed, available } => {
                write!(f, "needs {needed} bytes but only {available} remain")
            }
            ErrorKind::BadSignature { found, expected } => write!(
                f,
                "signature {:?} is not {:?}",
                Ascii(&found),
                Ascii(&expected)
            ),
            ErrorKind::TableTooShort { stated, minimum } => {
                write!(f, "table length {stated} is below the minimum {minimum}")
            }
            ErrorKind::TableLengthExceedsData { stated, available } => write!(
                f,
                "table length {stated} exceeds the {available} bytes supplied"
            ),
            ErrorKind::BadChecksum { sum } => {
                write!(f, "checksum invalid (bytes sum to {sum:#04x}, not 0)")
            }
            ErrorKind::StructureTooShort {
                what,
                stated,
                minimum,
            } => write!(f, "{what} length {stated} is below the minimum {minimum}"),
            ErrorKind::StructureOverrun {
                what,
                stated,
                remaining,
            } => write!(
                f,
                "{what} length {stated} runs past the end ({remaining} bytes remain)"
            ),
            ErrorKind::OddScopePath { stated } => write!(
                f,
                "device scope length {stated} leaves a partial PCI path element"
            ),
            ErrorKind::UnknownVariableEntry { entry_type } => write!(
                f,
                "IVHD device entry type {entry_type:#04x} has a variable length this parser cannot know"
            ),
        }
    }
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {:#x}: {}", self.offset, self.kind)
    }
}

/// Prints bytes as text, replacing anything that is not printable ASCII.
pub(crate) struct Ascii<'a>(pub &'a [u8]);

impl fmt::Debug for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        fmt::Display::fmt(self, f)?;
        f.write_str("\"")
    }
}

impl fmt::Display for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for &b in self.0 {
            if b == 0 {
                break;
            }
            let c = if (0x20..0x7f).contains(&b) { b as char } else { '?' };
            f.write_char(c)?;
        }
        Ok(())
    }
}
