//! The IVRS table (AMD-Vi): IOMMU hardware definitions (IVHD) and memory definitions (IVMD).

use super::bytes::Window;
use super::error::{AcpiError, ErrorKind};
use super::header::{check_table, Checksum, SdtHeader, SDT_HEADER_LEN};
use super::ivrs_entry::DeviceEntries;

/// Offset of the first IVHD/IVMD block (after header, IVinfo and 8 reserved bytes).
pub const IVRS_BLOCKS_OFFSET: usize = 48;
/// IVHD type 0x10: the legacy block, with an IOMMU feature reporting field.
pub const IVHD_TYPE_10: u8 = 0x10;
/// IVHD type 0x11: adds the EFR register image.
pub const IVHD_TYPE_11: u8 = 0x11;
/// IVHD type 0x40: like 0x11, and may carry ACPI HID device entries.
pub const IVHD_TYPE_40: u8 = 0x40;
/// IVMD flag: unity-map the range.
pub const IVMD_UNITY: u8 = 1 << 0;
/// IVMD flag: the range is readable by the devices.
pub const IVMD_READ: u8 = 1 << 1;
/// IVMD flag: the range is writable by the devices.
pub const IVMD_WRITE: u8 = 1 << 2;
/// IVMD flag: the range is an exclusion range (not translated).
pub const IVMD_EXCLUSION: u8 = 1 << 3;

/// A parsed, fully validated IVRS table.
#[derive(Debug, Clone, Copy)]
pub struct Ivrs<'a> {
    window: Window<'a>,
    header: SdtHeader,
    checksum_ok: bool,
}

impl<'a> Ivrs<'a> {
    /// Parses and validates an IVRS table: signature, length, checksum, every block and
    /// every IVHD device entry. Bytes past the header's length are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, AcpiError> {
        Self::parse_with(bytes, Checksum::Enforce)
    }

    /// Like [`Ivrs::parse`], but a wrong checksum is tolerated (see [`Ivrs::checksum_ok`]).
    pub fn parse_with(bytes: &'a [u8], checksum: Checksum) -> Result<Self, AcpiError> {
        let t = check_table(bytes, *b"IVRS", IVRS_BLOCKS_OFFSET, checksum)?;
        let ivrs = Ivrs { window: t.window, header: t.header, checksum_ok: t.checksum_ok };
        let mut it = ivrs.blocks();
        while let Some(b) = it.next_checked() {
            if let IvrsBlock::Hardware(h) = b? {
                let mut entries = h.entries();
                while let Some(e) = entries.next_checked() {
                    e?;
                }
            }
        }
        Ok(ivrs)
    }

    /// The ACPI header.
    pub fn header(&self) -> &SdtHeader {
        &self.header
    }

    /// Whether the checksum was correct.
    pub fn checksum_ok(&self) -> bool {
        self.checksum_ok
    }

    /// The IVinfo field.
    pub fn ivinfo(&self) -> IvInfo {
        IvInfo(self.window.u32(SDT_HEADER_LEN).unwrap_or(0))
    }

    /// The table bytes (exactly the stated length).
    pub fn bytes(&self) -> &'a [u8] {
        self.window.bytes()
    }

    /// All blocks in table order, unknown types included.
    pub fn blocks(&self) -> IvrsBlocks<'a> {
        IvrsBlocks::walk(self.window, IVRS_BLOCKS_OFFSET, read_block)
    }

    /// All IVHD blocks in table order, every type.
    pub fn ivhds(&self) -> impl Iterator<Item = Ivhd<'a>> {
        self.blocks().filter_map(|b| match b {
            IvrsBlock::Hardware(h) => Some(h),
            _ => None,
        })
    }

    /// All IVMD blocks in table order.
    pub fn ivmds(&self) -> impl Iterator<Item = Ivmd> + 'a {
        self.blocks().filter_map(|b| match b {
            IvrsBlock::Memory(m) => Some(m),
            _ => None,
        })
    }

    /// The IVHD type an OS supporting 0x10, 0x11 and 0x40 uses: the highest present.
    /// Firmware describes each IOMMU once per type; blocks of other types are ignored.
    pub fn preferred_ivhd_type(&self) -> Option<u8> {
        self.ivhds().map(|h| h.kind).max()
    }
}

/// The IVinfo field: what the IOMMUs support system-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvInfo(pub u32);

impl IvInfo {
    /// EFRSup: the IVHDs' EFR images are valid.
    pub fn efr_supported(self) -> bool {
        self.0 & 1 != 0
    }
    /// DMA remapping must stay enabled at OS hand-off (DMA guard).
    pub fn dma_remap_required(self) -> bool {
        self.0 & 2 != 0
    }
    /// Guest virtual address size field (bits 7:5).
    pub fn gva_size(self) -> u8 {
        ((self.0 >> 5) & 7) as u8
    }
    /// Physical address size in bits (bits 14:8).
    pub fn pa_size(self) -> u8 {
        ((self.0 >> 8) & 0x7f) as u8
    }
    /// Virtual address size in bits (bits 21:15).
    pub fn va_size(self) -> u8 {
        ((self.0 >> 15) & 0x7f) as u8
    }
    /// HT ATS reserved (bit 22).
    pub fn ht_ats_reserved(self) -> bool {
        self.0 & (1 << 22) != 0
    }
}

/// IVHD: one AMD IOMMU and the devices it translates.
#[derive(Debug, Clone)]
pub struct Ivhd<'a> {
    /// Table offset of the block.
    pub offset: usize,
    /// Block type: 0x10, 0x11 or 0x40.
    pub kind: u8,
    /// Flags byte (HtTunEn, PassPW, ResPassPW, Isoc, IotlbSup, Coherent, PrefSup, PPRSup).
    pub flags: u8,
    /// Stated length.
    pub length: u16,
    /// The IOMMU's own PCI device id.
    pub device_id: u16,
    /// Offset of the IOMMU capability block in its PCI config space.
    pub capability_offset: u16,
    /// MMIO register base.
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// IOMMU info (MSI number, UnitID).
    pub info: u16,
    /// Type 0x10: IOMMU feature reporting; 0x11/0x40: IOMMU attributes.
    pub attributes: u32,
    /// EFR register image (types 0x11 and 0x40 only).
    pub efr: Option<u64>,
    /// EFR2 register image (types 0x11/0x40; reserved in older specifications).
    pub efr2: Option<u64>,
    entries: Window<'a>,
}

impl<'a> Ivhd<'a> {
    /// The device entries.
    pub fn entries(&self) -> DeviceEntries<'a> {
        DeviceEntries::new(self.entries)
    }

    /// Offset of the first device entry from the start of the block.
    pub fn header_len(kind: u8) -> usize {
        if kind == IVHD_TYPE_10 {
            24
        } else {
            40
        }
    }
}

/// Which devices an IVMD applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IvmdTarget {
    /// Type 0x20: every device.
    All,
    /// Type 0x21: one device id.
    Device(u16),
    /// Type 0x22: an inclusive range of device ids.
    Range(u16, u16),
}

/// IVMD: memory with special treatment (unity mapping or exclusion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ivmd {
    /// Table offset of the block.
    pub offset: usize,
    /// Block type: 0x20, 0x21 or 0x22.
    pub kind: u8,
    /// Flags (`IVMD_*`).
    pub flags: u8,
    /// Stated length.
    pub length: u16,
    /// Device id (type 0x21) or first device id (type 0x22).
    pub device_id: u16,
    /// Auxiliary data (type 0x22: last device id).
    pub aux: u16,
    /// First byte of the memory range.
    pub start: u64,
    /// Length of the memory range in bytes.
    pub size: u64,
}

impl Ivmd {
    /// The devices this block applies to.
    pub fn target(&self) -> IvmdTarget {
        match self.kind {
            0x21 => IvmdTarget::Device(self.device_id),
            0x22 => IvmdTarget::Range(self.device_id, self.aux),
            _ => IvmdTarget::All,
        }
    }
}

/// One block of an IVRS table.
#[derive(Debug, Clone)]
pub enum IvrsBlock<'a> {
    /// IVHD type 0x10, 0x11 or 0x40.
    Hardware(Ivhd<'a>),
    /// IVMD type 0x20, 0x21 or 0x22.
    Memory(Ivmd),
    /// A block type this parser does not know, skipped by its length.
    Unknown {
        /// Type byte.
        kind: u8,
        /// Table offset.
        offset: usize,
        /// Stated length.
        length: u16,
    },
}

/// Iterates over the table's records, stopping at the first malformed one.
pub type IvrsBlocks<'a> = crate::acpi::bytes::Records<'a, IvrsBlock<'a>>;

fn minimum_length(kind: u8) -> (usize, &'static str) {
    match kind {
        IVHD_TYPE_10 => (24, "IVHD type 0x10"),
        IVHD_TYPE_11 => (40, "IVHD type 0x11"),
        IVHD_TYPE_40 => (40, "IVHD type 0x40"),
        0x20..=0x22 => (32, "IVMD"),
        _ => (4, "IVRS block"),
    }
}

fn read_block<'a>(table: &Window<'a>, at: usize) -> Result<(IvrsBlock<'a>, usize), AcpiError> {
    let kind = table.u8(at)?;
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
    let b = table.sub(at, stated)?;
    let offset = b.base();
    let block = match kind {
        IVHD_TYPE_10 | IVHD_TYPE_11 | IVHD_TYPE_40 => {
            let extended = kind != IVHD_TYPE_10;
            IvrsBlock::Hardware(Ivhd {
                offset,
                kind,
                flags: b.u8(1)?,
                length,
                device_id: b.u16(4)?,
                capability_offset: b.u16(6)?,
                base: b.u64(8)?,
                segment: b.u16(16)?,
                info: b.u16(18)?,
                attributes: b.u32(20)?,
                efr: if extended { Some(b.u64(24)?) } else { None },
                efr2: if extended { Some(b.u64(32)?) } else { None },
                entries: b.rest(Ivhd::header_len(kind)),
            })
        }
        0x20..=0x22 => IvrsBlock::Memory(Ivmd {
            offset,
            kind,
            flags: b.u8(1)?,
            length,
            device_id: b.u16(4)?,
            aux: b.u16(6)?,
            start: b.u64(16)?,
            size: b.u64(24)?,
        }),
        _ => IvrsBlock::Unknown { kind, offset, length },
    };
    Ok((block, stated))
}

#[cfg(test)]
mod tests;
