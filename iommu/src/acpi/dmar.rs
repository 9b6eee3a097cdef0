//! The DMAR table (Intel VT-d): remapping units, reserved memory and the rest.

use super::bytes::Window;
use super::error::{AcpiError, ErrorKind};
use super::header::{check_table, Checksum, SdtHeader, SDT_HEADER_LEN};
use super::scope::DeviceScopes;

mod structures;

pub use structures::{Andd, Atsr, Drhd, Rhsa, Rmrr, Satc, Sidp};

/// Offset of the first remapping structure (after header, width, flags, reserved).
pub const DMAR_STRUCTURES_OFFSET: usize = 48;

/// DMAR header flag: interrupt remapping is supported.
pub const DMAR_FLAG_INTR_REMAP: u8 = 1 << 0;
/// DMAR header flag: firmware asks the OS not to enable x2APIC.
pub const DMAR_FLAG_X2APIC_OPT_OUT: u8 = 1 << 1;
/// DMAR header flag: the platform opts in to DMA protection at OS hand-off.
pub const DMAR_FLAG_DMA_CTRL_OPT_IN: u8 = 1 << 2;
/// DRHD flag: the unit covers every device of its segment not claimed by another unit.
pub const DRHD_INCLUDE_PCI_ALL: u8 = 1 << 0;
/// ATSR flag: every root port of the segment supports ATS.
pub const ATSR_ALL_PORTS: u8 = 1 << 0;
/// SATC flag: devices in scope require ATC to be enabled.
pub const SATC_ATC_REQUIRED: u8 = 1 << 0;

/// A parsed, fully validated DMAR table. Cheap to copy; borrows the table bytes.
#[derive(Debug, Clone, Copy)]
pub struct Dmar<'a> {
    window: Window<'a>,
    header: SdtHeader,
    checksum_ok: bool,
}

impl<'a> Dmar<'a> {
    /// Parses and validates a DMAR table: signature, length, checksum, every structure
    /// and device scope length. Bytes past the header's length are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, AcpiError> {
        Self::parse_with(bytes, Checksum::Enforce)
    }

    /// Like [`Dmar::parse`], but a wrong checksum is tolerated (see [`Dmar::checksum_ok`]).
    pub fn parse_with(bytes: &'a [u8], checksum: Checksum) -> Result<Self, AcpiError> {
        let t = check_table(bytes, *b"DMAR", DMAR_STRUCTURES_OFFSET, checksum)?;
        let dmar = Dmar { window: t.window, header: t.header, checksum_ok: t.checksum_ok };
        let mut it = dmar.structures();
        while let Some(s) = it.next_checked() {
            if let Some(scopes) = s?.scopes() {
                scopes.validate()?;
            }
        }
        Ok(dmar)
    }

    /// The ACPI header.
    pub fn header(&self) -> &SdtHeader {
        &self.header
    }

    /// Whether the checksum was correct.
    pub fn checksum_ok(&self) -> bool {
        self.checksum_ok
    }

    /// The raw host address width field (DMA address width minus one).
    pub fn host_address_width(&self) -> u8 {
        self.window.u8(SDT_HEADER_LEN).unwrap_or(0)
    }

    /// The DMA physical address width in bits (the field plus one).
    pub fn address_width_bits(&self) -> u16 {
        u16::from(self.host_address_width()) + 1
    }

    /// The flags byte (`DMAR_FLAG_*`).
    pub fn flags(&self) -> u8 {
        self.window.u8(SDT_HEADER_LEN + 1).unwrap_or(0)
    }

    /// The table bytes (exactly the stated length).
    pub fn bytes(&self) -> &'a [u8] {
        self.window.bytes()
    }

    /// All remapping structures in table order, unknown types included.
    pub fn structures(&self) -> DmarStructures<'a> {
        DmarStructures::walk(self.window, DMAR_STRUCTURES_OFFSET, read_structure)
    }

    /// The DRHD structures (remapping units) in table order.
    pub fn drhds(&self) -> impl Iterator<Item = Drhd<'a>> {
        self.structures().filter_map(|s| match s {
            DmarStructure::Drhd(d) => Some(d),
            _ => None,
        })
    }

    /// The RMRR structures in table order.
    pub fn rmrrs(&self) -> impl Iterator<Item = Rmrr<'a>> {
        self.structures().filter_map(|s| match s {
            DmarStructure::Rmrr(r) => Some(r),
            _ => None,
        })
    }
}

/// One remapping structure of a DMAR table.
#[derive(Debug, Clone)]
pub enum DmarStructure<'a> {
    /// Type 0.
    Drhd(Drhd<'a>),
    /// Type 1.
    Rmrr(Rmrr<'a>),
    /// Type 2.
    Atsr(Atsr<'a>),
    /// Type 3.
    Rhsa(Rhsa),
    /// Type 4.
    Andd(Andd<'a>),
    /// Type 5.
    Satc(Satc<'a>),
    /// Type 6.
    Sidp(Sidp<'a>),
    /// A type this parser does not know, skipped by its length.
    Unknown {
        /// The type field.
        kind: u16,
        /// Table offset.
        offset: usize,
        /// Stated length.
        length: u16,
    },
}

impl<'a> DmarStructure<'a> {
    /// The structure's device scopes, for the types that have them.
    pub fn scopes(&self) -> Option<DeviceScopes<'a>> {
        match self {
            DmarStructure::Drhd(s) => Some(s.scopes.clone()),
            DmarStructure::Rmrr(s) => Some(s.scopes.clone()),
            DmarStructure::Atsr(s) => Some(s.scopes.clone()),
            DmarStructure::Satc(s) => Some(s.scopes.clone()),
            DmarStructure::Sidp(s) => Some(s.scopes.clone()),
            _ => None,
        }
    }

    /// The type field.
    pub fn kind(&self) -> u16 {
        match self {
            DmarStructure::Drhd(_) => 0,
            DmarStructure::Rmrr(_) => 1,
            DmarStructure::Atsr(_) => 2,
            DmarStructure::Rhsa(_) => 3,
            DmarStructure::Andd(_) => 4,
            DmarStructure::Satc(_) => 5,
            DmarStructure::Sidp(_) => 6,
            DmarStructure::Unknown { kind, .. } => *kind,
        }
    }
}

/// Iterates over the table's records, stopping at the first malformed one.
pub type DmarStructures<'a> = crate::acpi::bytes::Records<'a, DmarStructure<'a>>;

/// The smallest valid length of each known structure type.
fn minimum_length(kind: u16) -> (usize, &'static str) {
    match kind {
        0 => (16, "DRHD"),
        1 => (24, "RMRR"),
        2 => (8, "ATSR"),
        3 => (20, "RHSA"),
        4 => (8, "ANDD"),
        5 => (8, "SATC"),
        6 => (8, "SIDP"),
        _ => (4, "remapping structure"),
    }
}

fn read_structure<'a>(
    table: &Window<'a>,
    at: usize,
) -> Result<(DmarStructure<'a>, usize), AcpiError> {
    let kind = table.u16(at)?;
    let length = table.u16(at + 2)?;
    let stated = usize::from(length);
    let (minimum, what) = minimum_length(kind);
    if stated < minimum {
        return Err(table.error(at + 2, ErrorKind::StructureTooShort { what, stated, minimum }));
    }
    let remaining = table.len().saturating_sub(at);
    if stated > remaining {
        return Err(table.error(at + 2, ErrorKind::StructureOverrun { what, stated, remaining }));
    }
    let s = table.sub(at, stated)?;
    let offset = s.base();
    let structure = match kind {
        0 => DmarStructure::Drhd(Drhd {
            offset,
            length,
            flags: s.u8(4)?,
            size: s.u8(5)?,
            segment: s.u16(6)?,
            base: s.u64(8)?,
            scopes: DeviceScopes::new(s.rest(16)),
        }),
        1 => DmarStructure::Rmrr(Rmrr {
            offset,
            length,
            segment: s.u16(6)?,
            base: s.u64(8)?,
            limit: s.u64(16)?,
            scopes: DeviceScopes::new(s.rest(24)),
        }),
        2 => DmarStructure::Atsr(Atsr {
            offset,
            length,
            flags: s.u8(4)?,
            segment: s.u16(6)?,
            scopes: DeviceScopes::new(s.rest(8)),
        }),
        3 => DmarStructure::Rhsa(Rhsa {
            offset,
            length,
            base: s.u64(8)?,
            proximity_domain: s.u32(16)?,
        }),
        4 => DmarStructure::Andd(Andd {
            offset,
            length,
            device_number: s.u8(7)?,
            name: s.rest(8).bytes(),
        }),
        5 => DmarStructure::Satc(Satc {
            offset,
            length,
            flags: s.u8(4)?,
            segment: s.u16(6)?,
            scopes: DeviceScopes::new(s.rest(8)),
        }),
        6 => DmarStructure::Sidp(Sidp {
            offset,
            length,
            segment: s.u16(6)?,
            scopes: DeviceScopes::new(s.rest(8)),
        }),
        _ => DmarStructure::Unknown { kind, offset, length },
    };
    Ok((structure, stated))
}

#[cfg(test)]
mod tests;
