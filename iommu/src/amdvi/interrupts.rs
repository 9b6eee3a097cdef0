//! AMD-Vi interrupt remapping: the interrupt fields of the device table entry (quad 2),
//! the interrupt remapping table, and the IVHD device-setting byte.
//!
//! With DTE.IV = 0 a device's write to 0xFEE0_0000-0xFEEF_FFFF reaches the local APICs
//! as written: any vector, NMI, INIT, SMI. So every entry of the device table gets IV = 1
//! with IntCtl = remapped and a table pointer: a fixed or arbitrated interrupt is then
//! delivered only as the entry its data names says (an entry with RemapEn = 0 target-aborts
//! it), and NMI, INIT, ExtINT and LINT0/1 messages pass only where a pass bit says so.
//! Endpoints get no pass bit; only the platform's interrupt sources (the IOAPIC and HPET
//! special device ids of the IVRS) keep the pass bits firmware's device-setting byte asks
//! for, as Linux does for them. SysMgt stays 00b (system-management messages blocked).

use crate::bits::Field;
use crate::error::HwError;
use crate::platform::{FrameAllocator, PhysAddr, PhysMemory, PAGE_SIZE};

/// Quad 2 (bits 191:128 of the entry): interrupt map valid.
const DTE_IV: Field = Field::bit(0);
/// Quad 2: log2 of the interrupt table's entries (at most 11: 2048 entries).
const DTE_INT_TAB_LEN: Field = Field::new(1, 4);
/// Quad 2: interrupt table pointer, bits 51:6 (128-byte aligned).
const DTE_INT_TABLE_PTR: Field = Field::new(6, 46);
/// Quad 2: INIT messages pass unmapped.
const DTE_INIT_PASS: Field = Field::bit(56);
/// Quad 2: ExtINT messages pass unmapped.
const DTE_EINT_PASS: Field = Field::bit(57);
/// Quad 2: NMI messages pass unmapped.
const DTE_NMI_PASS: Field = Field::bit(58);
/// Quad 2: what happens to fixed and arbitrated interrupts (IntCtl).
const DTE_INT_CTL: Field = Field::new(60, 2);
/// Quad 2: LINT0 messages pass unmapped.
const DTE_LINT0_PASS: Field = Field::bit(62);
/// Quad 2: LINT1 messages pass unmapped.
const DTE_LINT1_PASS: Field = Field::bit(63);
/// Every quad-2 bit this driver may set.
pub const QUAD2_DRIVER_BITS: u64 = DTE_IV.mask()
    | DTE_INT_TAB_LEN.mask()
    | DTE_INT_TABLE_PTR.mask()
    | DTE_INIT_PASS.mask()
    | DTE_EINT_PASS.mask()
    | DTE_NMI_PASS.mask()
    | DTE_INT_CTL.mask()
    | DTE_LINT0_PASS.mask()
    | DTE_LINT1_PASS.mask();

/// IntCtl: fixed and arbitrated interrupts are target-aborted.
pub const INT_CTL_ABORT: u64 = 0;
/// IntCtl: fixed and arbitrated interrupts pass unmapped (never used by this driver).
pub const INT_CTL_FORWARD: u64 = 1;
/// IntCtl: fixed and arbitrated interrupts are remapped through the table.
pub const INT_CTL_REMAP: u64 = 2;

/// Legacy (GAEn = 0) interrupt remapping table entry, 32 bits: remapping enabled.
const IRTE_REMAP_EN: Field = Field::bit(0);
/// IRTE: suppress IO_PAGE_FAULT events for this entry (left 0).
const IRTE_SUP_IOPF: Field = Field::bit(1);
/// IRTE: interrupt type (0 = fixed).
const IRTE_INT_TYPE: Field = Field::new(2, 3);
/// IRTE: destination mode (0 = physical).
const IRTE_DM: Field = Field::bit(6);
/// IRTE: destination APIC id.
const IRTE_DESTINATION: Field = Field::new(8, 8);
/// IRTE: vector.
const IRTE_VECTOR: Field = Field::new(16, 8);

/// Entries in every interrupt table: 2048, the most IntTabLen can say. The index is the
/// MSI data's bits 10:0, and QEMU reads the entry the data names without checking
/// IntTabLen, so a shorter table would let a forged message read beyond it.
pub const INT_TABLE_ENTRIES: u64 = 2048;
/// Bytes per legacy IRTE.
pub const IRTE_SIZE: u64 = 4;
const INT_TAB_LEN_LOG2: u64 = 11;
const _: () = assert!(1 << INT_TAB_LEN_LOG2 == INT_TABLE_ENTRIES);

/// The IVHD device-setting byte (IVRS entry data): which pass bits firmware asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceSetting(pub u8);

impl DeviceSetting {
    const INIT_PASS: Field = Field::bit(0);
    const EINT_PASS: Field = Field::bit(1);
    const NMI_PASS: Field = Field::bit(2);
    const SYS_MGT: Field = Field::new(4, 2);
    const LINT0_PASS: Field = Field::bit(6);
    const LINT1_PASS: Field = Field::bit(7);

    /// Whether firmware asks for any unmapped interrupt to pass (or system management).
    pub fn asks_for_passing(self) -> bool {
        self.0 != 0
    }
    /// The pass bits it asks for, in words ("NMIPass, Lint0Pass").
    pub fn words(self) -> alloc::string::String {
        let v = u64::from(self.0);
        let names = [
            (Self::INIT_PASS, "INITPass"),
            (Self::EINT_PASS, "EIntPass"),
            (Self::NMI_PASS, "NMIPass"),
            (Self::SYS_MGT, "SysMgt"),
            (Self::LINT0_PASS, "Lint0Pass"),
            (Self::LINT1_PASS, "Lint1Pass"),
        ];
        let on: alloc::vec::Vec<&str> =
            names.iter().filter(|(f, _)| f.is_set(v)).map(|(_, n)| *n).collect();
        on.join(", ")
    }
}

/// The interrupt fields of one device table entry (its quad 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DteInterrupts(pub u64);

impl DteInterrupts {
    /// IV = 1, IntCtl = remapped through `table` (2048 entries), no pass bit: what every
    /// endpoint gets.
    pub fn remapped(table: PhysAddr) -> Result<Self, HwError> {
        if !table.is_multiple_of(128) || !DTE_INT_TABLE_PTR.fits(table >> 6) {
            return Err(HwError::Unsupported {
                what: "an interrupt table not 128-byte aligned below 2^52",
            });
        }
        Ok(Self(
            DTE_IV.encode(1)
                | DTE_INT_TAB_LEN.encode(INT_TAB_LEN_LOG2)
                | DTE_INT_TABLE_PTR.encode(table >> 6)
                | DTE_INT_CTL.encode(INT_CTL_REMAP),
        ))
    }

    /// [`remapped`](Self::remapped) plus the pass bits `setting` asks for (INIT, ExtINT,
    /// NMI, LINT0/1; never system management): for the IOAPIC and HPET special ids only.
    pub fn platform_source(table: PhysAddr, setting: DeviceSetting) -> Result<Self, HwError> {
        let s = u64::from(setting.0);
        let mut q = Self::remapped(table)?.0;
        for (from, to) in [
            (DeviceSetting::INIT_PASS, DTE_INIT_PASS),
            (DeviceSetting::EINT_PASS, DTE_EINT_PASS),
            (DeviceSetting::NMI_PASS, DTE_NMI_PASS),
            (DeviceSetting::LINT0_PASS, DTE_LINT0_PASS),
            (DeviceSetting::LINT1_PASS, DTE_LINT1_PASS),
        ] {
            q = to.with(q, from.is_set(s));
        }
        Ok(Self(q))
    }

    /// IV = 0: the device's interrupt messages pass as written. Only for the tests'
    /// control runs, which show that the forged interrupt then arrives.
    pub const fn unmapped() -> Self {
        Self(0)
    }

    /// IV: interrupt requests are looked up (else they pass as written).
    pub fn valid(self) -> bool {
        DTE_IV.is_set(self.0)
    }
    /// IntCtl.
    pub fn int_ctl(self) -> u64 {
        DTE_INT_CTL.get(self.0)
    }
    /// The interrupt table's address.
    pub fn table(self) -> PhysAddr {
        DTE_INT_TABLE_PTR.get(self.0) << 6
    }
    /// Entries the table is declared to hold.
    pub fn table_entries(self) -> u64 {
        1 << DTE_INT_TAB_LEN.get(self.0)
    }
    /// Whether any unmapped message type (NMI, INIT, ExtINT, LINT0/1) passes.
    pub fn passes_anything(self) -> bool {
        [DTE_INIT_PASS, DTE_EINT_PASS, DTE_NMI_PASS, DTE_LINT0_PASS, DTE_LINT1_PASS]
            .iter()
            .any(|f| f.is_set(self.0))
    }
    /// NMIPass.
    pub fn nmi_passes(self) -> bool {
        DTE_NMI_PASS.is_set(self.0)
    }
}

/// A legacy interrupt remapping table entry (32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Irte(pub u32);

impl Irte {
    /// RemapEn = 1: deliver `vector` (fixed, physical) to local APIC `apic_id`.
    pub fn remapped(vector: u8, apic_id: u8) -> Self {
        let v = IRTE_REMAP_EN.encode(1)
            | IRTE_SUP_IOPF.encode(0)
            | IRTE_INT_TYPE.encode(0)
            | IRTE_DM.encode(0)
            | IRTE_DESTINATION.encode(u64::from(apic_id))
            | IRTE_VECTOR.encode(u64::from(vector));
        Self(v as u32)
    }
    /// RemapEn.
    pub fn enabled(self) -> bool {
        IRTE_REMAP_EN.is_set(u64::from(self.0))
    }
    /// The vector delivered.
    pub fn vector(self) -> u8 {
        IRTE_VECTOR.get(u64::from(self.0)) as u8
    }
}

/// An interrupt remapping table of [`INT_TABLE_ENTRIES`] legacy entries in physically
/// contiguous, zeroed frames (every entry RemapEn = 0: every fixed interrupt aborted).
#[derive(Debug)]
pub struct InterruptTable {
    base: PhysAddr,
}

impl InterruptTable {
    /// Frames the table takes.
    pub const FRAMES: u64 = INT_TABLE_ENTRIES * IRTE_SIZE / PAGE_SIZE;

    /// Allocates an empty table.
    pub fn allocate<P: FrameAllocator + PhysMemory>(mem: &mut P) -> Result<Self, HwError> {
        let base = crate::amdvi::device_table::alloc_contiguous(mem, Self::FRAMES)?;
        mem.flush_for_device(base, Self::FRAMES * PAGE_SIZE);
        Ok(Self { base })
    }
    /// Physical address of entry 0.
    pub fn base(&self) -> PhysAddr {
        self.base
    }
    /// Reads entry `index` (the low 11 bits of an MSI's data).
    pub fn read(&self, mem: &impl PhysMemory, index: u16) -> Option<Irte> {
        let (word, shift) = self.locate(index)?;
        Some(Irte((mem.read_u64(word) >> shift) as u32))
    }
    /// Writes entry `index` and flushes it for the device.
    pub fn write(&self, mem: &mut impl PhysMemory, index: u16, entry: Irte) -> Result<(), HwError> {
        let (word, shift) = self
            .locate(index)
            .ok_or(HwError::Unsupported { what: "an interrupt index beyond 2047" })?;
        let old = mem.read_u64(word);
        let value = Field::new(shift, 32).set(old, u64::from(entry.0));
        mem.write_u64(word, value);
        mem.flush_for_device(word, 8);
        Ok(())
    }
    fn locate(&self, index: u16) -> Option<(PhysAddr, u32)> {
        let at = u64::from(index) * IRTE_SIZE;
        (u64::from(index) < INT_TABLE_ENTRIES).then(|| (self.base + (at & !7), 8 * (at & 7) as u32))
    }
    /// Gives the frames back (only once no entry points at the table).
    pub fn free(self, mem: &mut impl FrameAllocator) {
        for i in 0..Self::FRAMES {
            mem.free_frame(self.base + i * PAGE_SIZE);
        }
    }
}
