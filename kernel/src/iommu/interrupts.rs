//! Routing one assigned device's MSI to one host vector through its unit's remapping
//! tables: VT-d an IRTE (source id verified) named by a remappable-format message, AMD-Vi
//! a table of the device's own whose entry 0 names the vector (the device's DTE points at
//! it). Every other message of the device is still refused.
#![deny(unsafe_code)]

use super::{IommuSystem, Route, RouteError, Units};
use crate::mem::KernelMemory;
use iommu::amdvi::interrupts::{InterruptTable, Irte as AmdIrte};
use iommu::amdvi::DteInterrupts;
use iommu::vtd::{remappable_msi, Irte as VtdIrte};

/// The first VT-d interrupt handle given to assigned devices (lower ones stay free for the
/// in-kernel tests).
const FIRST_HANDLE: u16 = 32;

/// One routed device interrupt: the MSI address and data the device must send.
#[derive(Debug)]
pub struct RoutedInterrupt {
    /// The unit and requester id.
    pub route: Route,
    /// The MSI address to program into the device.
    pub address: u64,
    /// The MSI data to program into the device.
    pub data: u16,
    /// VT-d: the IRTE handle.
    handle: Option<u16>,
    /// AMD-Vi: the device's own interrupt table.
    table: Option<InterruptTable>,
}

impl IommuSystem {
    /// Points `route`'s device at host vector `vector` on this CPU: returns the message
    /// the device must send. Errors when the unit does not remap interrupts.
    pub fn route_interrupt(
        &mut self,
        route: Route,
        vector: u8,
    ) -> Result<RoutedInterrupt, RouteError> {
        let apic = crate::apic::id();
        let no_unit = RouteError::NoSuchUnit(route.unit);
        match &mut self.units {
            Units::None => Err(RouteError::NoIommu),
            Units::Vtd(units) => {
                let unit = units.get_mut(route.unit).ok_or(no_unit)?;
                // Host vectors are unique per partition slot, so handles derived from them are too.
                let handle = FIRST_HANDLE + u16::from(vector);
                let entry = VtdIrte::remapped(vector, apic, false, route.requester_id)?;
                unit.set_irte(handle, entry)?;
                let (address, data) = remappable_msi(handle);
                Ok(RoutedInterrupt {
                    route,
                    address,
                    data: data as u16,
                    handle: Some(handle),
                    table: None,
                })
            }
            Units::Amd(units) => {
                let unit = units.get_mut(route.unit).ok_or(no_unit)?;
                let apic8 = u8::try_from(apic).map_err(|_| RouteError::ApicIdTooWide(apic))?;
                let mut mem = KernelMemory;
                let table = InterruptTable::allocate(&mut mem)?;
                let installed = table
                    .write(&mut mem, 0, AmdIrte::remapped(vector, apic8))
                    .and_then(|()| DteInterrupts::remapped(table.base()))
                    .and_then(|q| unit.set_interrupts(route.requester_id, q));
                if let Err(e) = installed {
                    let _ = unit.restore_interrupts(route.requester_id);
                    table.free(&mut mem);
                    return Err(e.into());
                }
                let address = 0xFEE0_0000 | (u64::from(apic8) << 12);
                Ok(RoutedInterrupt { route, address, data: 0, handle: None, table: Some(table) })
            }
        }
    }

    /// Undoes [`route_interrupt`](Self::route_interrupt): the entry removed (and
    /// invalidated) before its table is freed.
    pub fn unroute_interrupt(&mut self, routed: RoutedInterrupt) -> Result<(), RouteError> {
        let RoutedInterrupt { route, handle, table, .. } = routed;
        let no_unit = RouteError::NoSuchUnit(route.unit);
        match &mut self.units {
            Units::None => Ok(()),
            Units::Vtd(units) => {
                let unit = units.get_mut(route.unit).ok_or(no_unit)?;
                match handle {
                    Some(h) => Ok(unit.clear_irte(h)?),
                    None => Ok(()),
                }
            }
            Units::Amd(units) => {
                let unit = units.get_mut(route.unit).ok_or(no_unit)?;
                unit.restore_interrupts(route.requester_id)?;
                if let Some(t) = table {
                    t.free(&mut KernelMemory);
                }
                Ok(())
            }
        }
    }
}
