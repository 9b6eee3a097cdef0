use super::*;
use crate::acpi::pci::{Bdf, BridgeKind, PciBridge};
use crate::acpi::testutil::{self as tu, alias_entry, dmar, drhd, entry4, ivhd, ivrs, scope};
use crate::acpi::{Dmar, Ivrs};
use alloc::vec;
use alloc::vec::Vec;

fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
    Bdf::new(bus, device, function).unwrap()
}

/// Root port 00:1c.0 -> bus 1..=3; on bus 1 a PCIe-to-PCI bridge 01:00.0 -> bus 2;
/// on bus 2 a conventional bridge 02:05.0 -> bus 3.
fn topology() -> Vec<PciBridge> {
    vec![
        PciBridge {
            segment: 0,
            bdf: bdf(0, 0x1c, 0),
            secondary: 1,
            subordinate: 3,
            kind: BridgeKind::PciExpress,
        },
        PciBridge {
            segment: 0,
            bdf: bdf(1, 0, 0),
            secondary: 2,
            subordinate: 3,
            kind: BridgeKind::PcieToPci,
        },
        PciBridge {
            segment: 0,
            bdf: bdf(2, 5, 0),
            secondary: 3,
            subordinate: 3,
            kind: BridgeKind::ConventionalPci,
        },
    ]
}

#[test]
fn scope_paths_follow_bridges_to_bdfs() {
    let t = dmar(
        38,
        0,
        &[drhd(
            0,
            0,
            0xfed9_0000,
            &[
                scope(1, 0, 0, &[(0x1c, 0), (0, 0), (7, 1)]),
                scope(2, 0, 0, &[(0x1c, 0)]),
                scope(1, 0, 0, &[(0x1d, 0), (0, 0)]),
                scope(1, 0, 0, &[(0x20, 0)]),
            ],
        )],
    );
    let d = Dmar::parse(&t).unwrap();
    let units = DmarUnits::new(&d, &topology());
    let u = &units.units[0];
    assert_eq!(u.scopes[0].bdf, bdf(2, 7, 1));
    assert_eq!(u.scopes[1].bdf, bdf(0, 0x1c, 0));
    assert_eq!(u.scopes[1].buses, Some((1, 3)));
    assert_eq!(u.unresolved.len(), 2);
    assert!(
        matches!(u.unresolved[0], ScopeProblem::MissingBridge { at, .. } if at == bdf(0, 0x1d, 0))
    );
    assert!(matches!(u.unresolved[1], ScopeProblem::BadHop { device: 0x20, .. }));
}

#[test]
fn requester_ids_follow_linux_alias_rules() {
    let topo = topology();
    // Behind a PCIe root port only: unchanged.
    assert_eq!(requester_id(&topo, 0, bdf(1, 3, 0)), bdf(1, 3, 0));
    // Below the PCIe-to-PCI bridge: (secondary bus, 00.0).
    assert_eq!(requester_id(&topo, 0, bdf(2, 7, 1)), bdf(2, 0, 0));
    // Below the conventional bridge too: the topmost substitution (PCIe-to-PCI) wins.
    assert_eq!(requester_id(&topo, 0, bdf(3, 1, 0)), bdf(2, 0, 0));
    // Root bus device.
    assert_eq!(requester_id(&topo, 0, bdf(0, 2, 0)), bdf(0, 2, 0));
}

#[test]
fn explicit_scopes_win_over_include_pci_all() {
    let t = dmar(
        38,
        0,
        &[
            drhd(0, 0, 0xfed9_0000, &[scope(1, 0, 0, &[(2, 0)])]),
            drhd(0, 0, 0xfed9_2000, &[scope(2, 0, 0, &[(0x1c, 0)])]),
            drhd(1, 0, 0xfed9_1000, &[scope(3, 2, 0xf0, &[(0x1f, 0)])]),
        ],
    );
    let d = Dmar::parse(&t).unwrap();
    let topo = topology();
    let mut units = DmarUnits::new(&d, &topo);
    let who =
        |u: &DmarUnits, b: Bdf| u.translating_unit(&topo, 0, b).map(|t| (t.unit, t.requester_id));
    assert_eq!(who(&units, bdf(0, 2, 0)), Some((0, 0x0010)));
    assert_eq!(who(&units, bdf(2, 7, 1)), Some((1, 0x0200)));
    assert_eq!(who(&units, bdf(0, 0x1f, 3)), Some((2, 0x00fb)));
    assert_eq!(units.translating_unit(&topo, 1, bdf(0, 2, 0)), None);
    assert_eq!(units.ioapic_unit(2), Some((2, bdf(0xf0, 0x1f, 0))));
    // A device listed by an unusable unit gets no route at all: the INCLUDE_PCI_ALL unit
    // never sees its DMA. Devices of other units keep theirs.
    units.units[0].usable = false;
    assert_eq!(who(&units, bdf(0, 2, 0)), None);
    assert_eq!(who(&units, bdf(2, 7, 1)), Some((1, 0x0200)));
    assert_eq!(who(&units, bdf(0, 0x1f, 3)), Some((2, 0x00fb)));
    // Devices behind a disabled bridge-scope unit too, and its IOAPIC.
    units.units[1].usable = false;
    assert_eq!(who(&units, bdf(2, 7, 1)), None);
    assert_eq!(who(&units, bdf(0, 0x1c, 0)), None);
    // The INCLUDE_PCI_ALL unit disabled: the devices only it would translate have none.
    units.units[0].usable = true;
    units.units[2].usable = false;
    assert_eq!(who(&units, bdf(0, 0x1f, 3)), None);
    assert_eq!(units.ioapic_unit(2), None);
    assert_eq!(who(&units, bdf(0, 2, 0)), Some((0, 0x0010)));
}

#[test]
fn a_device_of_an_unusable_ivhd_does_not_fall_to_another() {
    let first = entry4(2, 0x0020, 0);
    let mut second = Vec::new();
    second.extend_from_slice(&entry4(3, 0x0000, 0));
    second.extend_from_slice(&entry4(4, 0xffff, 0));
    let t = ivrs(
        0,
        &[ivhd(0x10, 2, 0xfed8_0000, 0, 0, &first), ivhd(0x10, 2, 0xfed9_0000, 0, 0, &second)],
    );
    let r = Ivrs::parse(&t).unwrap();
    let mut units = IvrsUnits::new(&r);
    let t = |u: &IvrsUnits<'_>, id| u.translating_unit(0, id).map(|t| t.unit);
    assert_eq!(t(&units, 0x0020), Some(0));
    assert_eq!(t(&units, 0x0028), Some(1));
    units.units[0].usable = false;
    assert_eq!(t(&units, 0x0020), None, "listed by the disabled IVHD first");
    assert_eq!(t(&units, 0x0028), Some(1));
    // Listed by both and the second one disabled: which is on the path is unknown.
    units.units[0].usable = true;
    units.units[1].usable = false;
    assert_eq!(t(&units, 0x0020), None);
    assert_eq!(t(&units, 0x0028), None);
}

#[test]
fn ivrs_ranges_aliases_and_specials_resolve() {
    let mut e = Vec::new();
    e.extend_from_slice(&entry4(3, 0x0008, 0));
    e.extend_from_slice(&entry4(4, 0xfffe, 0));
    e.extend_from_slice(&alias_entry(0x43, 0xff00, 0x00a5));
    e.extend_from_slice(&entry4(4, 0xffff, 0));
    e.extend_from_slice(&alias_entry(0x42, 0x0300, 0x0208));
    e.extend_from_slice(&tu::special_entry(0x21, 0x00a0, 1));
    e.extend_from_slice(&tu::special_entry(0, 0x00a0, 2));
    e.extend_from_slice(&entry4(4, 0x0010, 0)); // end without start
    let t = ivrs(0, &[ivhd(0x10, 2, 0xfed8_0000, 0, 0, &e), ivhd(0x40, 2, 0xfed8_0000, 0, 0, &e)]);
    let r = Ivrs::parse(&t).unwrap();
    let units = IvrsUnits::new(&r);
    assert_eq!(units.preferred_type, Some(0x40));
    assert_eq!(units.units.len(), 1);
    let u = &units.units[0];
    assert_eq!(u.index, 1, "index counts every IVHD block");
    assert_eq!(u.ranges.len(), 3);
    assert_eq!((u.ranges[0].first, u.ranges[0].last), (0x0008, 0xfffe));
    assert_eq!(u.problems, [EntryProblem::EndWithoutStart { offset: u.offset + 40 + 44 }]);
    let t = |id| units.translating_unit(0, id).map(|t| (t.unit, t.requester_id));
    assert_eq!(t(0x0010), Some((1, 0x0010)));
    assert_eq!(t(0xff42), Some((1, 0x00a5)), "alias range: later entry overrides");
    assert_eq!(t(0x0300), Some((1, 0x0208)), "alias select");
    assert_eq!(t(0x0004), None);
    assert_eq!(units.ioapic(0x21), Some((1, 0x00a0)));
    assert_eq!(units.hpet(0), Some((1, 0x00a0)));
    assert_eq!(units.ioapic(0x22), None);
}
