//! Assignability over the real-machine corpus: for every DMAR and IVRS table in testdata,
//! with the devices the table itself names as the machine's functions, the assessment
//! never panics, gives every device that firmware reserved memory for (RMRR, IVMD) a
//! "not assignable" verdict, calls nothing assignable that no unit translates, and writes
//! a skeleton the configuration parser accepts (or says that nothing can be assigned).

use iommu::acpi::pci::Bdf;
use iommu::acpi::scope::ScopeKind;
use iommu::acpi::{Dmar, Ivrs};
use iommu::assign::render::{json_lines, report_lines, skeleton};
use iommu::assign::{assess, BarInfo, Function, MachineFacts, Verdict};
use std::path::PathBuf;

fn tables(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(kind);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).expect("read table")))
        .collect();
    out.sort();
    out
}

/// A network controller with one memory BAR at `b`.
fn nic(segment: u16, b: Bdf) -> Function {
    Function {
        segment,
        bdf: b,
        vendor: 0x8086,
        device: 0x10d3,
        class: (0x02, 0x00, 0x00),
        bridge: None,
        pcie_type: Some(0),
        bars: vec![BarInfo { slot: 0, memory: true, base: 0xf000_0000, size: 0x2_0000 }],
        acs: None,
    }
}

fn host_bridge() -> Function {
    Function { class: (0x06, 0x00, 0x00), bars: vec![], ..nic(0, Bdf::from_id(0)) }
}

fn check(name: &str, facts: &MachineFacts<'_>, reserved_for: &[(u16, Bdf)]) {
    let a = assess(facts);
    let _ = report_lines(facts, &a, &[]);
    let _ = json_lines(facts, &a, &[]);
    for (f, d) in facts.functions.iter().zip(&a.devices) {
        if d.verdict.assignable() {
            assert!(d.translation.is_some(), "{name}: {} assignable without a unit", f.address());
        }
        if reserved_for.contains(&(f.segment, f.bdf)) {
            assert!(
                matches!(
                    d.verdict,
                    Verdict::FirmwareReserved { .. }
                        | Verdict::NoIommu
                        | Verdict::SharesGroup(_)
                        | Verdict::Bridge
                ),
                "{name}: {} has reserved memory but got {:?}",
                f.address(),
                d.verdict
            );
        }
    }
    // Nothing here is edu: every partition is commented out until the user's guest is
    // named; uncommented, the skeleton must parse.
    let text = skeleton(facts, &a).join("\n").replace("#! ", "");
    if !a.devices.iter().any(|d| d.verdict.assignable()) {
        assert!(text.contains("no function of this machine can be assigned"), "{name}: {text}");
    } else if let Err(e) = boot::partition_config::parse(&text) {
        panic!("{name}: the skeleton does not parse: {e}\n{text}");
    }
}

#[test]
fn every_dmar_of_the_corpus() {
    let mut with_rmrr = 0;
    let all = tables("dmar");
    assert!(all.len() > 100, "corpus missing: {} tables", all.len());
    for (name, bytes) in &all {
        let Ok(dmar) = Dmar::parse(bytes) else { continue };
        let mut functions = vec![host_bridge()];
        let mut reserved_for = Vec::new();
        let endpoint = |seg: u16, s: &iommu::acpi::scope::DeviceScope<'_>| {
            let hops: Vec<(u8, u8)> = s.path.hops().collect();
            (s.kind == ScopeKind::Endpoint && hops.len() == 1)
                .then(|| Bdf::new(s.start_bus, hops[0].0, hops[0].1))
                .flatten()
                .map(|b| (seg, b))
        };
        for d in dmar.drhds() {
            for s in d.scopes.clone() {
                if let Some((seg, b)) = endpoint(d.segment, &s) {
                    functions.push(nic(seg, b));
                }
            }
        }
        for r in dmar.rmrrs() {
            for s in r.scopes.clone() {
                if let Some((seg, b)) = endpoint(r.segment, &s) {
                    functions.push(nic(seg, b));
                    reserved_for.push((seg, b));
                }
            }
        }
        functions.push(nic(0, Bdf::new(0, 0x1f, 6).expect("bdf")));
        functions.sort_by_key(|f| (f.segment, f.bdf.id()));
        functions.dedup_by_key(|f| (f.segment, f.bdf.id()));
        with_rmrr += !reserved_for.is_empty() as usize;
        check(
            name,
            &MachineFacts { functions, dmar: Some(bytes), ..Default::default() },
            &reserved_for,
        );
    }
    assert!(with_rmrr > 10, "only {with_rmrr} tables with RMRR endpoints: the check proves little");
}

#[test]
fn every_ivrs_of_the_corpus() {
    let mut with_ivmd = 0;
    let all = tables("ivrs");
    assert!(!all.is_empty(), "corpus missing");
    for (name, bytes) in &all {
        let Ok(ivrs) = Ivrs::parse(bytes) else { continue };
        let units = iommu::acpi::resolve::IvrsUnits::new(&ivrs);
        let mut functions = vec![host_bridge()];
        for u in &units.units {
            for r in u.ranges.iter().take(32) {
                functions.push(nic(u.segment, Bdf::from_id(r.first)));
            }
        }
        let mut reserved_for = Vec::new();
        for m in ivrs.ivmds().filter(|m| m.size > 0 && m.kind != 0x20) {
            functions.push(nic(0, Bdf::from_id(m.device_id)));
            reserved_for.push((0, Bdf::from_id(m.device_id)));
        }
        functions.sort_by_key(|f| (f.segment, f.bdf.id()));
        functions.dedup_by_key(|f| (f.segment, f.bdf.id()));
        with_ivmd += !reserved_for.is_empty() as usize;
        check(
            name,
            &MachineFacts { functions, ivrs: Some(bytes), ..Default::default() },
            &reserved_for,
        );
    }
    eprintln!("{} IVRS tables, {with_ivmd} with device IVMDs", all.len());
}
