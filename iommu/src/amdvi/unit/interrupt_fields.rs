//! The interrupt fields of a device's entry (quad 2: IV, IntCtl, IntTabLen, IntTablePtr,
//! pass bits): every device id starts remapped through the unit's empty table (nothing
//! passes); an assigned device gets a table of its own; the IVRS platform sources (IOAPIC,
//! HPET) keep the pass bits their device-setting byte asks for.

use crate::error::HwError;
use crate::platform::{FrameAllocator, Mmio, PhysAddr, PhysMemory};

use crate::amdvi::command::Command;
use crate::amdvi::interrupts::{DeviceSetting, DteInterrupts};

use super::AmdViUnit;

impl<R: Mmio, P: FrameAllocator + PhysMemory> AmdViUnit<R, P> {
    /// Replaces `devid`'s interrupt fields (quad 2 of its entry) with `interrupts`, then
    /// invalidates the entry and its interrupt table and waits (when the unit runs).
    pub fn set_interrupts(&mut self, devid: u16, interrupts: DteInterrupts) -> Result<(), HwError> {
        let at = self.entry_address(devid)?;
        self.write_quad(at, 2, interrupts.0);
        if !self.enabled {
            return Ok(());
        }
        self.submit(Command::invalidate_devtab_entry(devid))?;
        self.stats.devtab_invalidations += 1;
        self.submit(Command::invalidate_interrupt_table(devid))?;
        self.stats.interrupt_table_invalidations += 1;
        self.completion_wait()
    }

    /// Gives a platform interrupt source (an IOAPIC or HPET special device id of the IVRS)
    /// the pass bits firmware's device-setting byte asks for, over the empty table.
    pub fn set_platform_source(
        &mut self,
        devid: u16,
        setting: DeviceSetting,
    ) -> Result<(), HwError> {
        let q = DteInterrupts::platform_source(self.empty_interrupts.base(), setting)?;
        self.set_interrupts(devid, q)?;
        self.platform_sources.retain(|(d, _)| *d != devid);
        self.platform_sources.push((devid, setting));
        Ok(())
    }

    /// The platform interrupt sources given their pass bits, with their setting bytes.
    pub fn platform_sources(&self) -> &[(u16, DeviceSetting)] {
        &self.platform_sources
    }

    /// Re-applies every platform source's interrupt fields (after a test changed them).
    pub fn restore_platform_sources(&mut self) -> Result<(), HwError> {
        for (devid, setting) in self.platform_sources.clone() {
            self.set_platform_source(devid, setting)?;
        }
        Ok(())
    }

    /// `devid` back to the default interrupt fields: remapped through the empty table,
    /// nothing passes.
    pub fn restore_interrupts(&mut self, devid: u16) -> Result<(), HwError> {
        let q = DteInterrupts::remapped(self.empty_interrupts.base())?;
        self.set_interrupts(devid, q)
    }

    /// Physical address of the empty interrupt table every device id starts with.
    pub fn empty_interrupt_table(&self) -> PhysAddr {
        self.empty_interrupts.base()
    }
}
