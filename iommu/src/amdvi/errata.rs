//! Processor-family errata of AMD IOMMUs that Linux and Xen work around at bring-up
//! (drivers/iommu/amd/init.c, xen/drivers/passthrough/amd/iommu_init.c), applied through
//! the IOMMU's own PCI function: its L2 indirect registers are reached by writing an index
//! to configuration offset 0xF0 (bit 8 enables a write) and the value at 0xF4.
//!
//! - Erratum 746, family 15h models 10h-1Fh ("IOMMU logging may stall translations"):
//!   L2_L2B_CK_GATE_CONTROL (index 0x90) bit 2, CKGateL2BMiscDisable, set.
//! - Family 15h models 30h-3Fh ("IOMMU mishandles ATS write permission"): L2_DEBUG_3
//!   (index 0x47) bit 0, AtsIgnoreIWDis, set.
//!
//! Linux's erratum 63 (a device table entry with SysMgt = 01b also needs IW) cannot arise
//! here: every entry this driver writes has SysMgt = 00b. Firmware is meant to set both
//! bits; the driver sets whichever it finds clear, once, and says so.

/// The configuration register that selects an L2 indirect register (bit 8: write enable).
const L2_INDEX: u16 = 0xF0;
/// The configuration register that holds the selected L2 indirect register's value.
const L2_DATA: u16 = 0xF4;
/// L2_INDEX: the selected register may be written.
const L2_WRITE_ENABLE: u32 = 1 << 8;

/// The IOMMU's PCI configuration space (32-bit accesses).
pub trait IommuConfig {
    /// Reads the dword at `offset`.
    fn read32(&mut self, offset: u16) -> u32;
    /// Writes the dword at `offset`.
    fn write32(&mut self, offset: u16, value: u32);
}

/// One erratum workaround.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Erratum {
    /// Its name, as Linux logs it.
    pub name: &'static str,
    /// The L2 indirect register it changes.
    pub index: u8,
    /// The bit it sets there.
    pub bit: u32,
}

/// Erratum 746: L2_L2B_CK_GATE_CONTROL[CKGateL2BMiscDisable].
pub const ERRATUM_746: Erratum = Erratum { name: "erratum 746", index: 0x90, bit: 1 << 2 };
/// The ATS write-permission check: L2_DEBUG_3[AtsIgnoreIWDis].
pub const ATS_WRITE_CHECK: Erratum = Erratum { name: "ATS write check", index: 0x47, bit: 1 << 0 };

/// The errata of an IOMMU in a processor of this family and model (CPUID's displayed
/// family and model).
pub fn errata_for(family: u32, model: u32) -> &'static [Erratum] {
    match (family, model) {
        (0x15, 0x10..=0x1F) => &[ERRATUM_746],
        (0x15, 0x30..=0x3F) => &[ATS_WRITE_CHECK],
        _ => &[],
    }
}

/// What applying one erratum found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Firmware had set the bit already: nothing written.
    AlreadySet,
    /// The bit was clear and has been set.
    Set,
    /// The bit was clear, was written, and still reads clear.
    Ignored,
}

fn read_l2(cfg: &mut impl IommuConfig, index: u8) -> u32 {
    cfg.write32(L2_INDEX, u32::from(index));
    cfg.read32(L2_DATA)
}

/// Applies `e` through `cfg`: reads the register, sets the bit if clear (write enable on,
/// value, write enable off again), and reads it back.
pub fn apply(cfg: &mut impl IommuConfig, e: Erratum) -> Applied {
    let value = read_l2(cfg, e.index);
    if value & e.bit != 0 {
        return Applied::AlreadySet;
    }
    cfg.write32(L2_INDEX, u32::from(e.index) | L2_WRITE_ENABLE);
    cfg.write32(L2_DATA, value | e.bit);
    cfg.write32(L2_INDEX, u32::from(e.index));
    if read_l2(cfg, e.index) & e.bit != 0 {
        Applied::Set
    } else {
        Applied::Ignored
    }
}
