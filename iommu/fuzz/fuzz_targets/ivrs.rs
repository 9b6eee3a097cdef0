//! Fuzzes the IVRS parser and everything downstream of it (resolution, sanity, summary).
#![no_main]

use iommu::acpi::header::Checksum;
use iommu::acpi::resolve::IvrsUnits;
use iommu::acpi::sanity::{check_ivrs, PlatformFacts};
use iommu::acpi::summary::ivrs_summary;
use iommu::acpi::Ivrs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Ivrs::parse(data);
    let Ok(ivrs) = Ivrs::parse_with(data, Checksum::Tolerate) else {
        return;
    };
    let mut units = IvrsUnits::new(&ivrs);
    let facts = PlatformFacts {
        reserved: None,
        ioapic_ids: Some(&[0x20, 0x21]),
    };
    let report = check_ivrs(&ivrs, &mut units, &facts);
    for w in &report.warnings {
        let _ = w.to_string();
    }
    for id in [0u16, 0x10, 0xa0, 0xff00, 0xffff] {
        let _ = units.translating_unit(0, id);
    }
    let _ = units.ioapic(0x21);
    let _ = ivrs_summary(&ivrs);
});
