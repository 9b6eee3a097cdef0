//! Fuzzes the DMAR parser and everything downstream of it (resolution, sanity, summary).
#![no_main]

use iommu::acpi::header::Checksum;
use iommu::acpi::pci::{Bdf, BridgeKind, MemRange, PciBridge};
use iommu::acpi::resolve::DmarUnits;
use iommu::acpi::sanity::{check_dmar, PlatformFacts};
use iommu::acpi::summary::dmar_summary;
use iommu::acpi::Dmar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Dmar::parse(data);
    let Ok(dmar) = Dmar::parse_with(data, Checksum::Tolerate) else {
        return;
    };
    // A small fixed topology so multi-hop paths and bridge scopes resolve.
    let topology = vec![
        PciBridge {
            segment: 0,
            bdf: Bdf::from_id(0x00e0),
            secondary: 1,
            subordinate: 3,
            kind: BridgeKind::PciExpress,
        },
        PciBridge {
            segment: 0,
            bdf: Bdf::from_id(0x0100),
            secondary: 2,
            subordinate: 2,
            kind: BridgeKind::PcieToPci,
        },
    ];
    let mut units = DmarUnits::new(&dmar, &topology);
    let reserved = [MemRange { start: 0x7000_0000, end: 0x8fff_ffff }];
    let facts = PlatformFacts {
        reserved: Some(&reserved),
        ioapic_ids: Some(&[0, 2, 8]),
    };
    let report = check_dmar(&dmar, &mut units, &facts);
    for w in &report.warnings {
        let _ = w.to_string();
    }
    for id in [0u16, 0x10, 0x100, 0x200, 0xfff8] {
        let _ = units.translating_unit(&topology, 0, Bdf::from_id(id));
    }
    let _ = dmar_summary(&dmar);
});
