//! What QEMU's amd-iommu has none of: SMI filter registers (its EFR has SmiFSup = 0) and
//! the family-15h errata registers behind the IOMMU's PCI function. Register models show
//! the driver locks every filter register and applies each workaround exactly where due.

use crate::amdvi::errata::{self, Applied, IommuConfig, ATS_WRITE_CHECK, ERRATUM_746};
use crate::amdvi::regs;
use crate::amdvi::{AmdViUnit, Efr};

use super::model::{setup, QEMU_EFR};

/// QEMU's EFR plus SmiFSup = 01b and SmiFRC = 3 (four registers).
const EFR_SMI4: u64 = QEMU_EFR | (1 << 16) | (3 << 18);

fn filter(n: usize) -> usize {
    regs::SMI_FILTER_BASE + 8 * n
}

#[test]
fn the_efr_says_how_many_smi_filter_registers_exist() {
    assert_eq!(Efr(QEMU_EFR).smi_filter_registers(), 0);
    assert_eq!(Efr(EFR_SMI4).smi_filter_registers(), 4);
    assert_eq!(Efr(QEMU_EFR | (1 << 16)).smi_filter_registers(), 1);
    // SmiFSup values other than 01b are reserved: no registers.
    assert_eq!(Efr(QEMU_EFR | (2 << 16) | (7 << 18)).smi_filter_registers(), 0);
    assert!(Efr(EFR_SMI4).words().iter().any(|w| w == "SmiF (4 SMI filter registers)"));
}

#[test]
fn every_smi_filter_register_is_locked_before_translation_goes_on() {
    let (mem, model) = setup(EFR_SMI4);
    let state = model.state.clone();
    {
        let mut s = state.borrow_mut();
        // Firmware: register 0 names the southbridge (00:14.0) and is unlocked, register 1
        // is unused, register 2 is firmware-locked and valid for 00:14.3, register 3 holds
        // a stale id without SmiDV.
        s.regs.insert(filter(0), 0x00A0 | 1 << 16);
        s.regs.insert(filter(2), 0x00A3 | 1 << 16 | 1 << 17);
        s.regs.insert(filter(3), 0x0123);
        // Past the announced count: never touched.
        s.regs.insert(filter(4), 0x0042);
    }
    let mut unit = AmdViUnit::new(model, mem, 0x00FF).unwrap();
    unit.enable().unwrap();
    let s = state.borrow();
    assert_eq!(s.regs[&filter(0)], 0x00A0 | 1 << 16 | 1 << 17, "firmware's source kept, locked");
    assert_eq!(s.regs[&filter(1)], 1 << 17, "unused: locked invalid");
    assert_eq!(s.regs[&filter(2)], 0x00A3 | 1 << 16 | 1 << 17, "firmware's lock left alone");
    assert_eq!(s.regs[&filter(3)], 1 << 17, "an id without SmiDV is not kept");
    assert_eq!(s.regs[&filter(4)], 0x0042);
    let report = unit.smi_filters();
    assert_eq!((report.registers, report.locked_now, report.firmware_locked), (4, 3, 1));
    assert_eq!(report.allowed, vec![0x00A0, 0x00A3]);
    assert_eq!(report.failed, 0);
    // The lock came before IOMMU_EN: the last filter write precedes the first enable.
    let accesses = &s.accesses;
    let last_filter = accesses.iter().rposition(|a| a.0 == filter(3)).unwrap();
    let writes = &s.control_writes;
    assert!(writes.iter().any(|w| w & 1 != 0));
    let enable_at = accesses
        .iter()
        .enumerate()
        .filter(|(_, a)| a.0 == regs::CONTROL)
        .map(|(i, _)| i)
        .nth(2)
        .unwrap();
    assert!(last_filter < enable_at, "filters locked at {last_filter}, IOMMU_EN at {enable_at}");
}

#[test]
fn a_unit_without_smi_filter_registers_is_not_touched_there() {
    let (mem, model) = setup(QEMU_EFR);
    let state = model.state.clone();
    let mut unit = AmdViUnit::new(model, mem, 0x00FF).unwrap();
    unit.enable().unwrap();
    assert!(!state.borrow().accesses.iter().any(|a| (0x60..0xE0).contains(&a.0)));
    assert_eq!(unit.smi_filters().registers, 0);
}

/// The IOMMU function's L2 indirect registers behind 0xF0/0xF4, write-protected unless
/// the index was written with bit 8.
#[derive(Default)]
struct L2Model {
    index: u32,
    l2: std::collections::HashMap<u8, u32>,
    writes: Vec<(u16, u32)>,
    read_only: bool,
}

impl IommuConfig for L2Model {
    fn read32(&mut self, offset: u16) -> u32 {
        match offset {
            0xF0 => self.index,
            0xF4 => self.l2.get(&(self.index as u8)).copied().unwrap_or(0),
            _ => u32::MAX,
        }
    }
    fn write32(&mut self, offset: u16, value: u32) {
        self.writes.push((offset, value));
        match offset {
            0xF0 => self.index = value,
            0xF4 if self.index & (1 << 8) != 0 && !self.read_only => {
                self.l2.insert(self.index as u8, value);
            }
            _ => {}
        }
    }
}

#[test]
fn errata_apply_to_the_families_linux_names_and_no_others() {
    assert_eq!(errata::errata_for(0x15, 0x10), &[ERRATUM_746]);
    assert_eq!(errata::errata_for(0x15, 0x1F), &[ERRATUM_746]);
    assert_eq!(errata::errata_for(0x15, 0x30), &[ATS_WRITE_CHECK]);
    assert_eq!(errata::errata_for(0x15, 0x3F), &[ATS_WRITE_CHECK]);
    for (family, model) in [(0x15, 0x0F), (0x15, 0x20), (0x15, 0x40), (0x17, 0x10), (0x19, 0x31)] {
        assert!(errata::errata_for(family, model).is_empty(), "{family:#x}/{model:#x}");
    }
}

#[test]
fn an_erratum_bit_is_set_once_with_the_write_enable_dropped_after() {
    let mut cfg = L2Model::default();
    cfg.l2.insert(0x90, 0x1000_0001);
    assert_eq!(errata::apply(&mut cfg, ERRATUM_746), Applied::Set);
    assert_eq!(cfg.l2[&0x90], 0x1000_0005, "bit 2 set, the others kept");
    assert_eq!(cfg.index, 0x90, "write enable off again");
    assert!(cfg.writes.contains(&(0xF0, 0x190)));
    // Second time: already set, nothing written to the data register.
    cfg.writes.clear();
    assert_eq!(errata::apply(&mut cfg, ERRATUM_746), Applied::AlreadySet);
    assert!(!cfg.writes.iter().any(|w| w.0 == 0xF4));
    // A unit that ignores the write is reported, not believed.
    let mut stuck = L2Model { read_only: true, ..L2Model::default() };
    assert_eq!(errata::apply(&mut stuck, ATS_WRITE_CHECK), Applied::Ignored);
    let mut ats = L2Model::default();
    assert_eq!(errata::apply(&mut ats, ATS_WRITE_CHECK), Applied::Set);
    assert_eq!(ats.l2[&0x47], 1);
}
