//! Chipset errata Linux applies to VT-d units (drivers/iommu/intel/iommu.c), by the PCI
//! ids of the machine's functions.
//!
//! - Write-buffer flushing (`quirk_iommu_rwbf`): the units of Mobile 4 Series (GM45) and
//!   G4x host bridges need write-buffer flushes although CAP.RWBF reads 0.
//! - Graphics-only units (`quirk_iommu_igfx` with `dmar_map_gfx`): on G4x/GM45 and
//!   Broadwell, DMA remapping of the integrated graphics is broken. Linux then ignores
//!   every DRHD that serves graphics only (its `gfx_dedicated` units: no INCLUDE_PCI_ALL,
//!   every scope a display-class endpoint). Here such a unit is marked unusable, so it is
//!   never enabled and its devices get no IOMMU route: they stay with the hypervisor's
//!   firmware, untranslated, and can never be assigned to a partition.

use crate::acpi::pci::Bdf;
use crate::acpi::resolve::{DmarUnit, DmarUnits};
use crate::acpi::scope::ScopeKind;

/// Intel's PCI vendor id.
const INTEL: u16 = 0x8086;

/// Host bridges whose units need write-buffer flushes although CAP.RWBF reads 0 (Linux's
/// `quirk_iommu_rwbf`): Mobile 4 Series (GM45) and the G4x family.
const RWBF_HOST_BRIDGES: &[(u16, u16)] = &[
    (INTEL, 0x2a40),
    (INTEL, 0x2e00),
    (INTEL, 0x2e10),
    (INTEL, 0x2e20),
    (INTEL, 0x2e30),
    (INTEL, 0x2e40),
    (INTEL, 0x2e90),
];

/// Intel device ids whose presence means graphics DMA remapping is broken (Linux's
/// `quirk_iommu_igfx`): the G4x/GM45 host bridges and the Broadwell graphics devices.
const GFX_REMAPPING_BROKEN: &[u16] = &[
    0x2a40, 0x2e00, 0x2e10, 0x2e20, 0x2e30, 0x2e40, 0x2e90, // G4x / GM45
    0x1606, 0x160b, 0x160e, 0x1602, 0x160a, 0x160d, // Broadwell GT1
    0x1616, 0x161b, 0x161e, 0x1612, 0x161a, 0x161d, // Broadwell GT2
    0x1626, 0x162b, 0x162e, 0x1622, 0x162a, 0x162d, // Broadwell GT3
    0x1636, 0x163b, 0x163e, 0x1632, 0x163a, 0x163d, // Broadwell RVP
];

/// PCI base class of display controllers.
const CLASS_DISPLAY: u8 = 0x03;

/// Whether the units of a machine with this host bridge (vendor, device) must flush the
/// write buffer whatever CAP.RWBF says.
pub fn needs_write_buffer_flush(host_bridge: (u16, u16)) -> bool {
    RWBF_HOST_BRIDGES.contains(&host_bridge)
}

/// Whether any of the machine's functions (vendor, device) is one whose graphics DMA
/// remapping Linux knows to be broken.
pub fn graphics_remapping_broken(functions: impl IntoIterator<Item = (u16, u16)>) -> bool {
    functions.into_iter().any(|(v, d)| v == INTEL && GFX_REMAPPING_BROKEN.contains(&d))
}

/// Whether `unit` serves graphics only (Linux's `gfx_dedicated`): not INCLUDE_PCI_ALL, at
/// least one resolved scope, and every resolved scope a display-class endpoint
/// (`class_of` gives a function's base class, `None` when it was not enumerated).
pub fn graphics_only(unit: &DmarUnit, class_of: impl Fn(u16, Bdf) -> Option<u8>) -> bool {
    !unit.include_pci_all
        && !unit.scopes.is_empty()
        && unit.scopes.iter().all(|s| {
            s.kind == ScopeKind::Endpoint && class_of(unit.segment, s.bdf) == Some(CLASS_DISPLAY)
        })
}

/// Marks every usable graphics-only unit unusable when `broken` (see the module comment);
/// returns their table indices.
pub fn leave_graphics_units_off(
    units: &mut DmarUnits,
    broken: bool,
    class_of: impl Fn(u16, Bdf) -> Option<u8>,
) -> alloc::vec::Vec<usize> {
    let mut off = alloc::vec::Vec::new();
    if !broken {
        return off;
    }
    for u in units.units.iter_mut().filter(|u| u.usable) {
        if graphics_only(u, &class_of) {
            u.usable = false;
            off.push(u.index);
        }
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::resolve::ResolvedScope;
    use crate::acpi::resolve::Translation;
    use alloc::vec;

    fn scope(kind: ScopeKind, bdf: Bdf) -> ResolvedScope {
        ResolvedScope { offset: 0, kind, enumeration_id: 0, bdf, buses: None }
    }

    fn unit(index: usize, include_pci_all: bool, scopes: Vec<ResolvedScope>) -> DmarUnit {
        DmarUnit {
            index,
            offset: 0,
            base: 0xfed9_0000 + 0x1000 * index as u64,
            register_size: 0x1000,
            segment: 0,
            include_pci_all,
            scopes,
            unresolved: vec![],
            usable: true,
        }
    }

    const IGD: Bdf = Bdf { bus: 0, device: 2, function: 0 };
    const XHCI: Bdf = Bdf { bus: 0, device: 0x14, function: 0 };

    fn class_of(_: u16, b: Bdf) -> Option<u8> {
        match b {
            IGD => Some(0x03),
            XHCI => Some(0x0c),
            _ => None,
        }
    }

    /// A laptop's two DRHDs: one for the integrated graphics alone, one INCLUDE_PCI_ALL.
    fn laptop() -> DmarUnits {
        DmarUnits {
            units: vec![
                unit(0, false, vec![scope(ScopeKind::Endpoint, IGD)]),
                unit(
                    1,
                    true,
                    vec![scope(ScopeKind::IoApic, Bdf { bus: 0, device: 0x1e, function: 7 })],
                ),
            ],
        }
    }

    #[test]
    fn a_unit_for_the_graphics_device_alone_is_graphics_only() {
        let u = laptop();
        assert!(graphics_only(&u.units[0], class_of));
        assert!(!graphics_only(&u.units[1], class_of), "INCLUDE_PCI_ALL");
        let mixed =
            unit(2, false, vec![scope(ScopeKind::Endpoint, IGD), scope(ScopeKind::Endpoint, XHCI)]);
        assert!(!graphics_only(&mixed, class_of));
        let bridge = unit(3, false, vec![scope(ScopeKind::Bridge, IGD)]);
        assert!(!graphics_only(&bridge, class_of), "a bridge scope is not a graphics endpoint");
        assert!(!graphics_only(&unit(4, false, vec![]), class_of), "no scope at all");
        let absent = unit(
            5,
            false,
            vec![scope(ScopeKind::Endpoint, Bdf { bus: 3, device: 0, function: 0 })],
        );
        assert!(!graphics_only(&absent, class_of), "a device enumeration did not find");
    }

    #[test]
    fn graphics_units_are_left_off_only_where_the_chipset_breaks_them() {
        assert!(graphics_remapping_broken([(0x8086, 0x29c0), (0x8086, 0x2a40)]));
        assert!(graphics_remapping_broken([(0x8086, 0x1616)]));
        assert!(!graphics_remapping_broken([(0x8086, 0x29c0), (0x1234, 0x11e8)]));
        assert!(!graphics_remapping_broken([(0x10de, 0x1616)]), "not Intel");
        let mut fine = laptop();
        assert!(leave_graphics_units_off(&mut fine, false, class_of).is_empty());
        assert!(fine.units.iter().all(|u| u.usable));
        let mut broken = laptop();
        assert_eq!(leave_graphics_units_off(&mut broken, true, class_of), vec![0]);
        assert!(!broken.units[0].usable && broken.units[1].usable);
    }

    #[test]
    fn the_graphics_device_of_a_unit_left_off_gets_no_route() {
        // The routing rule (a device listed by an unusable DRHD gets none, not the
        // INCLUDE_PCI_ALL unit's) is what keeps it unassignable.
        let mut u = laptop();
        leave_graphics_units_off(&mut u, true, class_of);
        let topology: Vec<crate::acpi::pci::PciBridge> = vec![];
        assert_eq!(u.translating_unit(&topology[..], 0, IGD), None);
        assert_eq!(
            u.translating_unit(&topology[..], 0, XHCI),
            Some(Translation { unit: 1, requester_id: 0x00a0 })
        );
    }

    #[test]
    fn rwbf_is_forced_for_the_g4x_host_bridges_only() {
        assert!(needs_write_buffer_flush((0x8086, 0x2a40)));
        assert!(!needs_write_buffer_flush((0x8086, 0x29c0)));
    }
}
