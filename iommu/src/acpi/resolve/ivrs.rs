//! IVRS resolution: IVHD device entries to device-id ranges with aliases, and device to IVHD.

use alloc::vec::Vec;
use core::fmt;

use super::Translation;
use crate::acpi::ivrs::{Ivhd, Ivrs};
use crate::acpi::ivrs_entry::{AcpiUid, EntryBody};

/// A run of device ids an IVHD translates, with the settings its entries gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvrsDeviceRange {
    /// Table offset of the entry that opened the range (or the select entry).
    pub offset: usize,
    /// First device id.
    pub first: u16,
    /// Last device id (inclusive).
    pub last: u16,
    /// DTE setting byte.
    pub data: u8,
    /// Requester id the devices' DMA carries instead of their own (alias entries).
    pub alias: Option<u16>,
    /// Extended data (extended entries).
    pub ext: Option<u32>,
}

impl IvrsDeviceRange {
    /// Whether `device_id` is in the range.
    pub fn contains(&self, device_id: u16) -> bool {
        (self.first..=self.last).contains(&device_id)
    }
}

/// An I/O APIC or HPET and the device id its interrupts carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvrsSpecial {
    /// Table offset of the entry.
    pub offset: usize,
    /// `SPECIAL_IOAPIC` or `SPECIAL_HPET`.
    pub variety: u8,
    /// IOAPIC id or HPET number.
    pub handle: u8,
    /// Device id.
    pub device_id: u16,
    /// DTE setting byte.
    pub data: u8,
}

/// A device named by ACPI _HID (and _UID) and the device id it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IvrsHidDevice<'a> {
    /// Table offset of the entry.
    pub offset: usize,
    /// _HID bytes.
    pub hid: [u8; 8],
    /// _UID.
    pub uid: AcpiUid<'a>,
    /// Device id.
    pub device_id: u16,
}

/// A device entry sequence that does not make sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryProblem {
    /// A range end with no open range.
    EndWithoutStart {
        /// Table offset of the end entry.
        offset: usize,
    },
    /// A range start never closed (another start, a select, or the block's end came).
    StartWithoutEnd {
        /// Table offset of the start entry.
        offset: usize,
    },
    /// A range whose end is below its start.
    Backwards {
        /// Table offset of the end entry.
        offset: usize,
        /// First device id.
        first: u16,
        /// Last device id.
        last: u16,
    },
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryProblem::EndWithoutStart { offset } => {
                write!(f, "device range end at {offset:#x} without a range start")
            }
            EntryProblem::StartWithoutEnd { offset } => {
                write!(f, "device range start at {offset:#x} is never closed")
            }
            EntryProblem::Backwards { offset, first, last } => write!(
                f,
                "device range ending at {offset:#x} runs backwards ({first:#06x} > {last:#06x})"
            ),
        }
    }
}

/// One IVHD with its device entries resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IvrsUnit<'a> {
    /// Index among all of the table's IVHD blocks.
    pub index: usize,
    /// Block type.
    pub kind: u8,
    /// Table offset of the block.
    pub offset: usize,
    /// MMIO base.
    pub base: u64,
    /// PCI segment group.
    pub segment: u16,
    /// The IOMMU's own device id.
    pub iommu_device_id: u16,
    /// IVHD flags (HtTunEn, PassPW, ResPassPW, Isoc, IotlbSup, Coherent, PrefSup, PPRSup).
    pub flags: u8,
    /// Device-id ranges, in entry order (later entries override earlier ones).
    pub ranges: Vec<IvrsDeviceRange>,
    /// I/O APICs and HPETs.
    pub specials: Vec<IvrsSpecial>,
    /// ACPI-named devices.
    pub hids: Vec<IvrsHidDevice<'a>>,
    /// Entry sequences that made no sense (skipped).
    pub problems: Vec<EntryProblem>,
    /// False once a sanity check found the unit unusable.
    pub usable: bool,
}

impl<'a> IvrsUnit<'a> {
    /// Resolves one IVHD's entries.
    pub fn new(index: usize, ivhd: &Ivhd<'a>) -> Self {
        let mut unit = IvrsUnit {
            index,
            kind: ivhd.kind,
            offset: ivhd.offset,
            base: ivhd.base,
            segment: ivhd.segment,
            iommu_device_id: ivhd.device_id,
            flags: ivhd.flags,
            ranges: Vec::new(),
            specials: Vec::new(),
            hids: Vec::new(),
            problems: Vec::new(),
            usable: true,
        };
        // The open range: (start entry offset, first id, data, alias, ext).
        let mut open: Option<IvrsDeviceRange> = None;
        for e in ivhd.entries() {
            let single = |alias, ext| IvrsDeviceRange {
                offset: e.offset,
                first: e.device_id,
                last: e.device_id,
                data: e.data,
                alias,
                ext,
            };
            let opens = match e.body {
                EntryBody::RangeStart => Some(single(None, None)),
                EntryBody::AliasRangeStart { alias } => Some(single(Some(alias), None)),
                EntryBody::ExtendedRangeStart { ext } => Some(single(None, Some(ext))),
                _ => None,
            };
            if let Some(start) = opens {
                if let Some(prev) = open.replace(start) {
                    unit.problems.push(EntryProblem::StartWithoutEnd { offset: prev.offset });
                }
                continue;
            }
            match e.body {
                EntryBody::RangeEnd => match open.take() {
                    Some(mut r) if r.first <= e.device_id => {
                        r.last = e.device_id;
                        unit.ranges.push(r);
                    }
                    Some(r) => unit.problems.push(EntryProblem::Backwards {
                        offset: e.offset,
                        first: r.first,
                        last: e.device_id,
                    }),
                    None => unit.problems.push(EntryProblem::EndWithoutStart { offset: e.offset }),
                },
                EntryBody::All => unit.ranges.push(IvrsDeviceRange {
                    first: 0,
                    last: u16::MAX,
                    ..single(None, None)
                }),
                EntryBody::Select => unit.ranges.push(single(None, None)),
                EntryBody::AliasSelect { alias } => unit.ranges.push(single(Some(alias), None)),
                EntryBody::ExtendedSelect { ext } => unit.ranges.push(single(None, Some(ext))),
                EntryBody::Special { handle, source, variety } => unit.specials.push(IvrsSpecial {
                    offset: e.offset,
                    variety,
                    handle,
                    device_id: source,
                    data: e.data,
                }),
                EntryBody::AcpiHid { hid, uid, .. } => unit.hids.push(IvrsHidDevice {
                    offset: e.offset,
                    hid,
                    uid,
                    device_id: e.device_id,
                }),
                _ => {}
            }
        }
        if let Some(r) = open {
            unit.problems.push(EntryProblem::StartWithoutEnd { offset: r.offset });
        }
        unit
    }

    /// The range that decides `device_id`'s settings: the last one listing it.
    pub fn range_for(&self, device_id: u16) -> Option<&IvrsDeviceRange> {
        self.ranges.iter().rev().find(|r| r.contains(device_id))
    }
}

/// The IVHDs an OS uses (those of the preferred type), resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IvrsUnits<'a> {
    /// The IVHD type chosen (the highest of 0x10/0x11/0x40 present).
    pub preferred_type: Option<u8>,
    /// The units of that type, in table order.
    pub units: Vec<IvrsUnit<'a>>,
}

impl<'a> IvrsUnits<'a> {
    /// Resolves every IVHD of the preferred type.
    pub fn new(ivrs: &Ivrs<'a>) -> Self {
        let preferred_type = ivrs.preferred_ivhd_type();
        let units = ivrs
            .ivhds()
            .enumerate()
            .filter(|(_, h)| Some(h.kind) == preferred_type)
            .map(|(i, h)| IvrsUnit::new(i, &h))
            .collect();
        IvrsUnits { preferred_type, units }
    }

    /// The unit that translates `device_id` in `segment`, and the requester id its DMA
    /// carries (the alias when an alias entry covers it). `None` when an unusable IVHD
    /// lists the device: that unit may be the one on the device's path, and no other unit
    /// would see its DMA (with two IVHDs listing one device, which is on the path cannot
    /// be known, so a disabled one among them is enough to refuse).
    pub fn translating_unit(&self, segment: u16, device_id: u16) -> Option<Translation> {
        let mut listing = self
            .units
            .iter()
            .filter(|u| u.segment == segment)
            .filter_map(|u| u.range_for(device_id).map(|r| (u, r)));
        if listing.clone().any(|(u, _)| !u.usable) {
            return None;
        }
        listing.next().map(|(unit, range)| Translation {
            unit: unit.index,
            requester_id: range.alias.unwrap_or(device_id),
        })
    }

    /// The usable unit and device id for I/O APIC `id` (for interrupt remapping).
    pub fn ioapic(&self, id: u8) -> Option<(usize, u16)> {
        self.special(crate::acpi::ivrs_entry::SPECIAL_IOAPIC, id)
    }

    /// The usable unit and device id for HPET `id`.
    pub fn hpet(&self, id: u8) -> Option<(usize, u16)> {
        self.special(crate::acpi::ivrs_entry::SPECIAL_HPET, id)
    }

    fn special(&self, variety: u8, handle: u8) -> Option<(usize, u16)> {
        self.units.iter().filter(|u| u.usable).find_map(|u| {
            u.specials
                .iter()
                .find(|s| s.variety == variety && s.handle == handle)
                .map(|s| (u.index, s.device_id))
        })
    }
}
