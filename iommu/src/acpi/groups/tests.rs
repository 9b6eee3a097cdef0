use super::*;
use alloc::vec;

fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
    Bdf::new(bus, device, function).unwrap()
}

fn endpoint(b: Bdf) -> FunctionFacts {
    FunctionFacts {
        segment: 0,
        bdf: b,
        ids: (0x1234, 0x11e8),
        bridge: None,
        pcie_type: Some(0),
        acs: false,
        routed_id: None,
    }
}

fn bridge(
    b: Bdf,
    secondary: u8,
    kind: BridgeKind,
    pcie_type: Option<u8>,
    acs: bool,
) -> FunctionFacts {
    FunctionFacts {
        bridge: Some((secondary, secondary, kind)),
        pcie_type,
        acs,
        ids: (0x1b36, 0x000e),
        ..endpoint(b)
    }
}

fn members(iso: &Isolation, b: Bdf) -> Vec<Bdf> {
    iso.group_of(0, b).unwrap().members.clone()
}

/// QEMU's machine of the bridge test: two edu devices behind one pcie-pci-bridge
/// (00:06.0, bus 1), two more on the root bus.
#[test]
fn functions_behind_a_pcie_to_pci_bridge_share_its_id_and_group() {
    let f = vec![
        endpoint(bdf(0, 4, 0)),
        endpoint(bdf(0, 5, 0)),
        bridge(bdf(0, 6, 0), 1, BridgeKind::PcieToPci, Some(7), false),
        FunctionFacts { routed_id: Some(0x0100), ..endpoint(bdf(1, 1, 0)) },
        FunctionFacts { routed_id: Some(0x0100), ..endpoint(bdf(1, 2, 0)) },
    ];
    let iso = isolate(&f);
    assert_eq!(iso.aliases_of(0, bdf(1, 1, 0)), [0x0100, 0x0108]);
    assert_eq!(iso.aliases_of(0, bdf(1, 2, 0)), [0x0100, 0x0110]);
    assert_eq!(iso.aliases_of(0, bdf(0, 4, 0)), [0x0020]);
    assert_eq!(members(&iso, bdf(1, 1, 0)), [bdf(0, 6, 0), bdf(1, 1, 0), bdf(1, 2, 0)]);
    assert_eq!(members(&iso, bdf(0, 4, 0)), [bdf(0, 4, 0)]);
    assert_eq!(members(&iso, bdf(0, 5, 0)), [bdf(0, 5, 0)]);
    assert_eq!(iso.groups.len(), 3);
    let g = iso.group_of(0, bdf(1, 2, 0)).unwrap();
    assert_eq!(g.to_string(), "isolation group 2 (0000:00:06.0 0000:01:01.0 0000:01:02.0)");
}

#[test]
fn conventional_bridges_add_their_own_id_and_every_one_on_the_path_counts() {
    // Root port 00:1c.0 (ACS) -> bus 1: PCIe-to-PCI 01:00.0 -> bus 2: PCI bridge 02:05.0
    // -> bus 3: device 03:01.0.
    let f = vec![
        bridge(bdf(0, 0x1c, 0), 1, BridgeKind::PciExpress, Some(4), true),
        bridge(bdf(1, 0, 0), 2, BridgeKind::PcieToPci, Some(7), false),
        bridge(bdf(2, 5, 0), 3, BridgeKind::ConventionalPci, None, false),
        endpoint(bdf(3, 1, 0)),
    ];
    let iso = isolate(&f);
    assert_eq!(
        iso.aliases_of(0, bdf(3, 1, 0)),
        [bdf(2, 0, 0).id(), bdf(2, 5, 0).id(), bdf(3, 1, 0).id()]
    );
    // The root port has ACS: it stays alone; everything below it is one group.
    assert_eq!(members(&iso, bdf(0, 0x1c, 0)), [bdf(0, 0x1c, 0)]);
    assert_eq!(members(&iso, bdf(3, 1, 0)), [bdf(1, 0, 0), bdf(2, 5, 0), bdf(3, 1, 0)]);
}

#[test]
fn ports_without_acs_join_what_is_below_them_and_ports_with_acs_isolate() {
    // Root ports 00:1c.0 (no ACS) and 00:1c.1 (ACS), one device each; a switch below a
    // third root port with two downstream ports, one with ACS and one without.
    let f = vec![
        bridge(bdf(0, 0x1c, 0), 1, BridgeKind::PciExpress, Some(4), false),
        bridge(bdf(0, 0x1c, 1), 2, BridgeKind::PciExpress, Some(4), true),
        endpoint(bdf(1, 0, 0)),
        endpoint(bdf(2, 0, 0)),
        bridge(bdf(0, 0x1d, 0), 3, BridgeKind::PciExpress, Some(4), true),
        bridge(bdf(3, 0, 0), 4, BridgeKind::PciExpress, Some(5), false),
        bridge(bdf(4, 1, 0), 5, BridgeKind::PciExpress, Some(6), true),
        bridge(bdf(4, 2, 0), 6, BridgeKind::PciExpress, Some(6), false),
        endpoint(bdf(5, 0, 0)),
        endpoint(bdf(6, 0, 0)),
    ];
    let iso = isolate(&f);
    assert_eq!(members(&iso, bdf(1, 0, 0)), [bdf(0, 0x1c, 0), bdf(1, 0, 0)]);
    assert_eq!(members(&iso, bdf(2, 0, 0)), [bdf(2, 0, 0)]);
    assert_eq!(members(&iso, bdf(5, 0, 0)), [bdf(5, 0, 0)]);
    assert_eq!(members(&iso, bdf(6, 0, 0)), [bdf(4, 2, 0), bdf(6, 0, 0)]);
    // Behind PCIe ports the ids are the functions' own.
    assert_eq!(iso.aliases_of(0, bdf(6, 0, 0)), [bdf(6, 0, 0).id()]);
}

#[test]
fn multi_function_devices_without_acs_are_one_group() {
    let f = vec![
        endpoint(bdf(0, 0x1f, 0)),
        endpoint(bdf(0, 0x1f, 2)),
        FunctionFacts { acs: true, ..endpoint(bdf(0, 0x1e, 0)) },
        FunctionFacts { acs: true, ..endpoint(bdf(0, 0x1e, 1)) },
    ];
    let iso = isolate(&f);
    assert_eq!(members(&iso, bdf(0, 0x1f, 2)), [bdf(0, 0x1f, 0), bdf(0, 0x1f, 2)]);
    assert_eq!(members(&iso, bdf(0, 0x1e, 1)), [bdf(0, 0x1e, 1)]);
}

#[test]
fn firmware_aliases_and_quirks_add_ids_and_join_groups() {
    let f = vec![
        // IVRS says 00:14.0's DMA arrives as 00:14.3's id (an alias entry).
        FunctionFacts {
            routed_id: Some(bdf(0, 0x14, 3).id()),
            acs: true,
            ..endpoint(bdf(0, 0x14, 0))
        },
        FunctionFacts { acs: true, ..endpoint(bdf(0, 0x14, 3)) },
        // A Marvell 88SE9128 at 03:00.0 DMAs as function 1 too.
        FunctionFacts { ids: (0x1b4b, 0x9128), ..endpoint(bdf(3, 0, 0)) },
        // A capability-less ASMedia PCIe-to-PCI bridge aliases as (secondary, 00.0).
        FunctionFacts {
            ids: (0x1b21, 0x1080),
            ..bridge(bdf(0, 0x1e, 0), 4, BridgeKind::ConventionalPci, None, false)
        },
        endpoint(bdf(4, 3, 0)),
    ];
    let iso = isolate(&f);
    assert_eq!(iso.aliases_of(0, bdf(0, 0x14, 0)), [bdf(0, 0x14, 0).id(), bdf(0, 0x14, 3).id()]);
    assert_eq!(members(&iso, bdf(0, 0x14, 0)), [bdf(0, 0x14, 0), bdf(0, 0x14, 3)]);
    assert_eq!(iso.aliases_of(0, bdf(3, 0, 0)), [bdf(3, 0, 0).id(), bdf(3, 0, 1).id()]);
    assert_eq!(iso.aliases_of(0, bdf(4, 3, 0)), [bdf(4, 0, 0).id(), bdf(4, 3, 0).id()]);
}

#[test]
fn a_looping_topology_terminates() {
    // Firmware left two bridges each claiming the other's bus.
    let f = vec![
        bridge(bdf(1, 0, 0), 2, BridgeKind::ConventionalPci, None, false),
        bridge(bdf(2, 0, 0), 1, BridgeKind::ConventionalPci, None, false),
        endpoint(bdf(2, 3, 0)),
    ];
    let iso = isolate(&f);
    assert_eq!(iso.groups.iter().map(|g| g.members.len()).sum::<usize>(), 3);
    assert!(iso.aliases_of(0, bdf(2, 3, 0)).contains(&bdf(1, 0, 0).id()));
}
