//! The device table: one 256-bit entry per 16-bit device id, telling the IOMMU whether a
//! device's DMA is translated, through which page table, and under which DomainID.
//!
//! Only the fields this driver uses are ever set; every reserved bit stays zero (a
//! reserved-bit violation makes the hardware reject the entry, and QEMU silently drops
//! the device's DMA and MSIs).

use alloc::vec::Vec;

use crate::amdvi::interrupts::{DteInterrupts, QUAD2_DRIVER_BITS};
use crate::error::HwError;
use crate::invalidate::DomainId;
use crate::platform::{FrameAllocator, PhysAddr, PhysMemory, PAGE_SIZE};

/// Bytes per device table entry.
pub const DTE_SIZE: u64 = 32;
/// Device table entries per 4 KiB frame.
pub const DTES_PER_FRAME: u64 = PAGE_SIZE / DTE_SIZE;
/// The most frames the base register's 9-bit size field can describe (65536 entries).
pub const MAX_TABLE_FRAMES: u64 = 512;

const V: u64 = 1 << 0;
const TV: u64 = 1 << 1;
const MODE_SHIFT: u32 = 9;
const MODE_MASK: u64 = 0x7 << MODE_SHIFT;
const ROOT_MASK: u64 = 0x000F_FFFF_FFFF_F000;
const IR: u64 = 1 << 61;
const IW: u64 = 1 << 62;
const DOMAIN_MASK: u64 = 0xFFFF;

/// Every quad-0 bit this driver may set; the rest of the entry is reserved or unused.
pub const QUAD0_DRIVER_BITS: u64 = V | TV | MODE_MASK | ROOT_MASK | IR | IW;
/// Every quad-1 bit this driver may set (the DomainID).
pub const QUAD1_DRIVER_BITS: u64 = DOMAIN_MASK;

/// One device table entry as four little-endian quadwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceTableEntry {
    quads: [u64; 4],
}

impl DeviceTableEntry {
    /// V=1, TV=1, Mode=0, IR=IW=0: the device is known and all its DMA is refused.
    /// (V=0 would let the device through untranslated.)
    pub const fn blocking() -> Self {
        Self { quads: [V | TV, 0, 0, 0] }
    }

    /// V=1, TV=1, Mode=`levels`, IR=IW=1: DMA is translated through the v1 page table at
    /// `root` with `levels` levels and cached under `domain`.
    pub fn translated(domain: DomainId, root: PhysAddr, levels: u32) -> Result<Self, HwError> {
        if !(1..=6).contains(&levels) {
            return Err(HwError::Unsupported { what: "page-table levels outside 1..=6" });
        }
        if root & !ROOT_MASK != 0 {
            return Err(HwError::Unsupported {
                what: "page-table root not 4 KiB aligned below 2^52",
            });
        }
        let quad0 = V | TV | (u64::from(levels) << MODE_SHIFT) | root | IR | IW;
        Ok(Self { quads: [quad0, u64::from(domain), 0, 0] })
    }

    /// An entry from its four quadwords as read from the table.
    pub const fn from_quads(quads: [u64; 4]) -> Self {
        Self { quads }
    }

    /// The four quadwords as the hardware reads them.
    pub const fn quads(&self) -> [u64; 4] {
        self.quads
    }

    /// V: the entry is valid (V=0 means DMA passes untranslated).
    pub fn valid(&self) -> bool {
        self.quads[0] & V != 0
    }
    /// TV: the translation fields (Mode, root) are valid.
    pub fn translation_valid(&self) -> bool {
        self.quads[0] & TV != 0
    }
    /// Mode: page-table levels, 0 = no translation (access governed by IR/IW alone).
    pub fn mode(&self) -> u32 {
        ((self.quads[0] & MODE_MASK) >> MODE_SHIFT) as u32
    }
    /// Physical address of the top-level page table.
    pub fn root(&self) -> PhysAddr {
        self.quads[0] & ROOT_MASK
    }
    /// IR: DMA reads allowed.
    pub fn read_allowed(&self) -> bool {
        self.quads[0] & IR != 0
    }
    /// IW: DMA writes allowed.
    pub fn write_allowed(&self) -> bool {
        self.quads[0] & IW != 0
    }
    /// DomainID the IOMMU tags this device's cached translations with.
    pub fn domain(&self) -> DomainId {
        (self.quads[1] & DOMAIN_MASK) as DomainId
    }
    /// True for an entry that refuses every DMA of the device.
    pub fn is_blocking(&self) -> bool {
        self.valid()
            && self.translation_valid()
            && self.mode() == 0
            && !self.read_allowed()
            && !self.write_allowed()
    }
    /// True when the entry translates through a page table (and so may have filled the
    /// IOTLB under its DomainID).
    pub fn is_translating(&self) -> bool {
        self.valid() && self.translation_valid() && self.mode() != 0
    }
    /// The interrupt fields (quad 2).
    pub fn interrupts(&self) -> DteInterrupts {
        DteInterrupts(self.quads[2])
    }
    /// This entry with its interrupt fields (quad 2) replaced by `interrupts`.
    pub const fn with_interrupts(mut self, interrupts: DteInterrupts) -> Self {
        self.quads[2] = interrupts.0;
        self
    }
    /// True when no bit outside the fields this driver programs is set.
    pub fn reserved_bits_clear(&self) -> bool {
        self.quads[0] & !QUAD0_DRIVER_BITS == 0
            && self.quads[1] & !QUAD1_DRIVER_BITS == 0
            && self.quads[2] & !QUAD2_DRIVER_BITS == 0
            && self.quads[3] == 0
    }
}

/// A device table in physically contiguous frames, every entry initialised to blocking.
#[derive(Debug)]
pub struct DeviceTable {
    base: PhysAddr,
    frames: u64,
}

impl DeviceTable {
    /// Allocates a table covering device ids `0..=max_device_id` (rounded up to whole frames)
    /// and fills every entry with [`DeviceTableEntry::blocking`].
    pub fn allocate<P: FrameAllocator + PhysMemory>(
        mem: &mut P,
        max_device_id: u16,
    ) -> Result<Self, HwError> {
        let entries = u64::from(max_device_id) + 1;
        let frames = entries.div_ceil(DTES_PER_FRAME).min(MAX_TABLE_FRAMES);
        let base = alloc_contiguous(mem, frames)?;
        let table = Self { base, frames };
        let blocking = DeviceTableEntry::blocking().quads();
        for devid in 0..table.entries() {
            // Frames come zeroed: only quad 0 differs from zero in a blocking entry.
            mem.write_u64(base + devid * DTE_SIZE, blocking[0]);
        }
        mem.flush_for_device(base, frames * PAGE_SIZE);
        Ok(table)
    }

    /// Physical address of the first entry.
    pub fn base(&self) -> PhysAddr {
        self.base
    }
    /// Number of entries (device ids `0..entries()` are covered).
    pub fn entries(&self) -> u64 {
        self.frames * DTES_PER_FRAME
    }
    /// The value for the Device Table Base Address register (base | frames - 1).
    pub fn base_register_value(&self) -> u64 {
        self.base | (self.frames - 1)
    }
    /// Physical address of `devid`'s entry, or `None` beyond the table.
    pub fn entry_address(&self, devid: u16) -> Option<PhysAddr> {
        let devid = u64::from(devid);
        (devid < self.entries()).then(|| self.base + devid * DTE_SIZE)
    }
    /// Reads `devid`'s entry from memory.
    pub fn read(&self, mem: &impl PhysMemory, devid: u16) -> Option<DeviceTableEntry> {
        let at = self.entry_address(devid)?;
        let mut quads = [0; 4];
        for (i, q) in quads.iter_mut().enumerate() {
            *q = mem.read_u64(at + 8 * i as u64);
        }
        Some(DeviceTableEntry::from_quads(quads))
    }
    /// Gives the table's frames back (only once the IOMMU no longer uses it).
    pub fn free(self, mem: &mut impl FrameAllocator) {
        for i in 0..self.frames {
            mem.free_frame(self.base + i * PAGE_SIZE);
        }
    }
}

/// Finds `frames` physically contiguous frames by asking for single frames until a run
/// (ascending or descending) is long enough; frames outside the run are given back.
pub(crate) fn alloc_contiguous<P: FrameAllocator>(
    mem: &mut P,
    frames: u64,
) -> Result<PhysAddr, HwError> {
    let mut spare: Vec<PhysAddr> = Vec::new();
    let mut run: Option<(PhysAddr, PhysAddr)> = None; // [lo, hi)
    let attempts = 2 * frames + 64;
    let mut result = Err(HwError::OutOfMemory);
    for _ in 0..attempts {
        let Some(frame) = mem.alloc_zeroed_frame() else {
            break;
        };
        run = match run {
            Some((lo, hi)) if frame == hi => Some((lo, hi + PAGE_SIZE)),
            Some((lo, hi)) if frame + PAGE_SIZE == lo => Some((frame, hi)),
            Some((lo, hi)) => {
                spare.extend((lo..hi).step_by(PAGE_SIZE as usize));
                Some((frame, frame + PAGE_SIZE))
            }
            None => Some((frame, frame + PAGE_SIZE)),
        };
        if let Some((lo, hi)) = run {
            if (hi - lo) / PAGE_SIZE == frames {
                result = Ok(lo);
                break;
            }
        }
    }
    if result.is_err() {
        if let Some((lo, hi)) = run {
            spare.extend((lo..hi).step_by(PAGE_SIZE as usize));
        }
    }
    for frame in spare {
        mem.free_frame(frame);
    }
    result
}
