//! Routing an assigned device's interrupt messages to host vectors through its unit's
//! remapping tables. VT-d: one IRTE per message (source id verified), named by a
//! remappable-format message whose handle derives from the host vector (pool vectors are
//! unique, so handles are too). AMD-Vi: a table of the device's own (the device's DTE
//! points at it) whose entry `index` names the vector; the message's data is the index.
//! Every message of the device that no entry names is still refused.
#![deny(unsafe_code)]

use super::{IommuSystem, Route, RouteError, Units};
use crate::mem::KernelMemory;
use alloc::vec::Vec;
use iommu::amdvi::interrupts::{InterruptTable, Irte as AmdIrte};
use iommu::amdvi::DteInterrupts;
use iommu::vtd::{remappable_msi, Irte as VtdIrte};

/// The first VT-d interrupt handle given to assigned devices (lower ones stay free for the
/// in-kernel tests).
const FIRST_HANDLE: u16 = 32;

/// A device's interrupt routing: the messages routed so far (see
/// [`IommuSystem::open_interrupts`]). Given back with [`IommuSystem::close_interrupts`].
#[derive(Debug)]
pub struct DeviceRouting {
    /// The unit and requester id.
    pub route: Route,
    /// VT-d: the IRTE handles in use.
    handles: Vec<u16>,
    /// AMD-Vi: the device's own interrupt table.
    table: Option<InterruptTable>,
}

/// One routed device interrupt: the device's routing with one message.
#[derive(Debug)]
pub struct RoutedInterrupt {
    /// The routing (its route is the unit and requester id).
    pub routing: DeviceRouting,
    /// The MSI address to program into the device.
    pub address: u64,
    /// The MSI data to program into the device.
    pub data: u16,
}

impl IommuSystem {
    /// Starts `route`'s device's interrupt routing with no message routed (AMD-Vi: its DTE
    /// points at an empty table of its own). Errors when the unit does not remap.
    pub fn open_interrupts(&mut self, route: Route) -> Result<DeviceRouting, RouteError> {
        let no_unit = RouteError::NoSuchUnit(route.unit);
        match &mut self.units {
            Units::None => Err(RouteError::NoIommu),
            Units::Vtd(units) => {
                units.get(route.unit).ok_or(no_unit)?;
                Ok(DeviceRouting { route, handles: Vec::new(), table: None })
            }
            Units::Amd(units) => {
                let unit = units.get_mut(route.unit).ok_or(no_unit)?;
                let mut mem = KernelMemory;
                let table = InterruptTable::allocate(&mut mem)?;
                let installed = DteInterrupts::remapped(table.base())
                    .and_then(|q| unit.set_interrupts(route.requester_id, q));
                if let Err(e) = installed {
                    let _ = unit.restore_interrupts(route.requester_id);
                    table.free(&mut mem);
                    return Err(e.into());
                }
                Ok(DeviceRouting { route, handles: Vec::new(), table: Some(table) })
            }
        }
    }

    /// Routes the device's message number `index` (0 for MSI, the table entry for MSI-X)
    /// to host vector `vector` on this CPU: returns the address and data the device must
    /// send for it.
    pub fn route_message(
        &mut self,
        routing: &mut DeviceRouting,
        index: u16,
        vector: u8,
    ) -> Result<(u64, u16), RouteError> {
        let apic = crate::apic::id();
        let route = routing.route;
        let no_unit = RouteError::NoSuchUnit(route.unit);
        match &mut self.units {
            Units::None => Err(RouteError::NoIommu),
            Units::Vtd(units) => {
                let unit = units.get_mut(route.unit).ok_or(no_unit)?;
                let handle = FIRST_HANDLE + u16::from(vector);
                let entry = VtdIrte::remapped(vector, apic, false, route.requester_id)?;
                unit.set_irte(handle, entry)?;
                routing.handles.push(handle);
                let (address, data) = remappable_msi(handle);
                Ok((address, data as u16))
            }
            Units::Amd(units) => {
                let unit = units.get_mut(route.unit).ok_or(no_unit)?;
                let apic8 = u8::try_from(apic).map_err(|_| RouteError::ApicIdTooWide(apic))?;
                let table = routing.table.as_ref().ok_or(RouteError::NoIommu)?;
                let mut mem = KernelMemory;
                table.write(&mut mem, index, AmdIrte::remapped(vector, apic8))?;
                // Setting the DTE again invalidates it and the interrupt table.
                let q = DteInterrupts::remapped(table.base())?;
                unit.set_interrupts(route.requester_id, q)?;
                Ok((0xFEE0_0000 | (u64::from(apic8) << 12), index))
            }
        }
    }

    /// Undoes [`open_interrupts`](Self::open_interrupts) and every message routed since:
    /// the entries removed (and invalidated) before the table is freed.
    pub fn close_interrupts(&mut self, routing: DeviceRouting) -> Result<(), RouteError> {
        let DeviceRouting { route, handles, table } = routing;
        let no_unit = RouteError::NoSuchUnit(route.unit);
        match &mut self.units {
            Units::None => Ok(()),
            Units::Vtd(units) => {
                let unit = units.get_mut(route.unit).ok_or(no_unit)?;
                for h in handles {
                    unit.clear_irte(h)?;
                }
                Ok(())
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

    /// Routes `route`'s device's one MSI message to host vector `vector`
    /// ([`open_interrupts`](Self::open_interrupts) and message 0).
    pub fn route_interrupt(
        &mut self,
        route: Route,
        vector: u8,
    ) -> Result<RoutedInterrupt, RouteError> {
        let mut routing = self.open_interrupts(route)?;
        match self.route_message(&mut routing, 0, vector) {
            Ok((address, data)) => Ok(RoutedInterrupt { routing, address, data }),
            Err(e) => {
                let _ = self.close_interrupts(routing);
                Err(e)
            }
        }
    }

    /// Undoes [`route_interrupt`](Self::route_interrupt).
    pub fn unroute_interrupt(&mut self, routed: RoutedInterrupt) -> Result<(), RouteError> {
        self.close_interrupts(routed.routing)
    }
}
