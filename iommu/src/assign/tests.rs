use super::render::{json_lines, report_lines, skeleton};
use super::*;
use crate::acpi::testutil::{dmar, drhd, qemu_ivrs, rmrr, scope};
use alloc::vec;

fn bdf(bus: u8, dev: u8, func: u8) -> Bdf {
    Bdf::new(bus, dev, func).unwrap()
}

fn mem_bar(base: u64) -> BarInfo {
    BarInfo { slot: 0, memory: true, base, size: 0x10_0000 }
}

fn function(b: Bdf, ids: (u16, u16), class: (u8, u8, u8)) -> Function {
    Function {
        segment: 0,
        bdf: b,
        vendor: ids.0,
        device: ids.1,
        class,
        bridge: None,
        pcie_type: None,
        bars: vec![mem_bar(0xfe00_0000 + ((b.id() as u64) << 20))],
        acs: None,
    }
}

fn edu(b: Bdf) -> Function {
    function(b, (0x1234, 0x11e8), (0x00, 0xff, 0x00))
}

fn bridge(b: Bdf, buses: (u8, u8), pcie_type: Option<u8>) -> Function {
    Function {
        bridge: Some(buses),
        pcie_type,
        bars: vec![],
        ..function(b, (0x1b36, 0x000e), (0x06, 0x04, 0x00))
    }
}

/// QEMU q35 with two root-bus edus, a root port, a pcie-pci-bridge with two edus behind
/// it, a PCI serial card holding the console at 0x2f8 and an I/O-only function.
fn q35() -> Vec<Function> {
    let mut serial = function(bdf(0, 7, 0), (0x1b36, 0x0002), (0x07, 0x00, 0x02));
    serial.bars = vec![BarInfo { slot: 0, memory: false, base: 0x2f8, size: 8 }];
    let mut io_only = function(bdf(0, 8, 0), (0x8086, 0x2922), (0x01, 0x06, 0x01));
    io_only.bars = vec![BarInfo { slot: 4, memory: false, base: 0xc000, size: 0x20 }];
    vec![
        function(bdf(0, 0, 0), (0x8086, 0x29c0), (0x06, 0x00, 0x00)),
        edu(bdf(0, 4, 0)),
        edu(bdf(0, 5, 0)),
        bridge(bdf(0, 6, 0), (1, 2), Some(4)),
        bridge(bdf(1, 0, 0), (2, 2), Some(PCIE_TO_PCI_BRIDGE)),
        edu(bdf(2, 1, 0)),
        edu(bdf(2, 2, 0)),
        serial,
        io_only,
    ]
}

fn include_all_dmar(extra: &[Vec<u8>]) -> Vec<u8> {
    let mut s = vec![drhd(1, 0, 0xfed9_0000, &[scope(3, 0, 0xff, &[(0, 0)])])];
    s.extend_from_slice(extra);
    dmar(38, 1, &s)
}

fn verdicts(a: &Assessment) -> Vec<&'static str> {
    a.devices.iter().map(|d| d.verdict.key()).collect()
}

#[test]
fn vtd_q35_gives_the_verdicts_a_reviewer_would() {
    let table = include_all_dmar(&[]);
    let facts = MachineFacts {
        functions: q35(),
        dmar: Some(&table),
        console: Some(ConsoleAt::Port(0x2f8)),
        ..Default::default()
    };
    let a = assess(&facts);
    assert_eq!(a.architecture, Architecture::Vtd);
    assert_eq!(
        verdicts(&a),
        [
            "bridge",
            "assignable",
            "assignable",
            "bridge",
            "bridge",
            "shares-group",
            "shares-group",
            "console",
            "no-memory-bar"
        ]
    );
    // Behind the PCIe-to-PCI bridge both edus carry the alias (secondary bus, 00.0).
    assert_eq!(a.devices[5].translation.map(|t| t.requester_id), Some(0x0200));
    assert_eq!(a.devices[6].translation.map(|t| t.requester_id), Some(0x0200));
    assert_eq!(a.devices[5].group, a.devices[6].group);
    assert_eq!(a.devices[5].verdict, Verdict::SharesGroup(vec!["0000:02:02.0".into()]));
    assert_ne!(a.devices[1].group, a.devices[2].group);
    let lines = report_lines(&facts, &a, &[]);
    assert!(lines.iter().any(|l| l.starts_with("DMAR: unit 0 at 0xfed90000 segment 0, includes")));
    assert!(lines.iter().any(|l| l.starts_with("DMAR-IR: firmware supports interrupt remapping")));
    assert!(lines.iter().any(|l| l == "assign: 2 of 9 functions assignable"), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains(
        "assign: 0000:00:04.0 1234:11e8 unclassified device [00ff00], unit 0 requester id 0x0020"
    )));
}

#[test]
fn skeleton_parses_as_a_configuration_and_names_the_assignable_devices() {
    let table = include_all_dmar(&[]);
    let facts = MachineFacts { functions: q35(), dmar: Some(&table), ..Default::default() };
    let a = assess(&facts);
    let text = skeleton(&facts, &a).join("\n");
    let cfg = boot::partition_config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let names: Vec<&str> = cfg.partitions().map(|p| p.name).collect();
    assert_eq!(names, ["dev-00-04-0", "dev-00-05-0"]);
    assert!(text.contains("image builtin"), "{text}");
    assert!(!text.contains("02:01.0"), "{text}");
}

#[test]
fn non_edu_devices_get_a_guest_module_and_the_partition_limit_holds() {
    let table = include_all_dmar(&[]);
    let nics: Vec<Function> =
        (1..=6).map(|d| function(bdf(0, d, 0), (0x8086, 0x10d3), (0x02, 0x00, 0x00))).collect();
    let facts = MachineFacts { functions: nics, dmar: Some(&table), ..Default::default() };
    let a = assess(&facts);
    let text = skeleton(&facts, &a).join("\n");
    // As written nothing is active (no edu): every partition waits for the user's guest.
    assert!(boot::partition_config::parse(&text).is_err(), "{text}");
    let uncommented = text.replace("#! ", "");
    let cfg = boot::partition_config::parse(&uncommented)
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(cfg.partitions().count(), 4);
    assert!(text.contains("#!   image module:guest.elf"), "{text}");
    assert!(text.contains("# also assignable (4 partitions at most): 0000:00:06.0"), "{text}");
}

#[test]
fn rmrr_and_missing_scope_are_reasons() {
    // Unit 0 lists only 00:04.0 (no include-all); an RMRR names 00:04.0.
    let table = dmar(
        38,
        1,
        &[
            drhd(0, 0, 0xfed9_0000, &[scope(1, 0, 0, &[(4, 0)])]),
            rmrr(0, 0x7f00_0000, 0x7f0f_ffff, &[scope(1, 0, 0, &[(4, 0)])]),
        ],
    );
    let facts = MachineFacts {
        functions: vec![edu(bdf(0, 4, 0)), edu(bdf(0, 5, 0))],
        dmar: Some(&table),
        ..Default::default()
    };
    let a = assess(&facts);
    assert_eq!(
        a.devices[0].verdict,
        Verdict::FirmwareReserved {
            range: MemRange { start: 0x7f00_0000, end: 0x7f0f_ffff },
            source: "RMRR"
        }
    );
    assert_eq!(a.devices[1].verdict, Verdict::NoIommu);
    let lines = report_lines(&facts, &a, &[]);
    assert!(lines.iter().any(|l| l.contains("RMRR region 0x7f000000-0x7f0fffff")), "{lines:#?}");
    assert!(skeleton(&facts, &a).iter().any(|l| l.contains("no function of this machine")));
}

#[test]
fn amdvi_uses_ivhd_ranges_and_reports_interrupt_remapping_entries() {
    let table = qemu_ivrs();
    // The QEMU-like IVRS covers 00:01.0, 00:02.0 and buses 1 (device ids 0x100-0x1ff).
    let facts = MachineFacts {
        functions: vec![edu(bdf(0, 1, 0)), edu(bdf(0, 3, 0)), edu(bdf(1, 0, 0))],
        ivrs: Some(&table),
        ..Default::default()
    };
    let a = assess(&facts);
    assert_eq!(a.architecture, Architecture::AmdVi);
    assert_eq!(verdicts(&a), ["assignable", "no-iommu", "assignable"]);
    let regs = [(0, render::UnitRegisters::AmdVi { efr: 0x29_6440 })];
    let lines = report_lines(&facts, &a, &regs);
    assert!(lines.iter().any(|l| l.starts_with("AMD-Vi: unit 0:   EFR 0x0000000000296440")));
    assert!(lines.iter().any(|l| l.contains("list 1 I/O APIC and 0 HPET entries")), "{lines:#?}");
}

#[test]
fn no_tables_means_no_iommu_for_everything_but_bridges() {
    let facts = MachineFacts { functions: q35(), ..Default::default() };
    let a = assess(&facts);
    assert!(a.devices.iter().all(|d| matches!(d.verdict, Verdict::NoIommu | Verdict::Bridge)));
    let lines = report_lines(&facts, &a, &[]);
    assert_eq!(lines[0], "IOMMU: no DMAR or IVRS table: no IOMMU");
}

#[test]
fn json_lines_are_objects_with_the_documented_keys() {
    let table = include_all_dmar(&[]);
    let facts = MachineFacts {
        functions: q35(),
        dmar: Some(&table),
        console: Some(ConsoleAt::Port(0x2f8)),
        ..Default::default()
    };
    let a = assess(&facts);
    let regs = [(
        0,
        render::UnitRegisters::Vtd { version: 0x10, cap: 0x0001_2008_4066_0462, ecap: 0x00f0_101a },
    )];
    let lines = json_lines(&facts, &a, &regs);
    for l in &lines {
        assert!(l.starts_with("{\"type\":\"") && l.ends_with('}'), "{l}");
    }
    assert!(lines[0].contains("\"cap\":\"0x0001200840660462\""), "{}", lines[0]);
    assert!(lines.iter().any(|l| l.contains("\"address\":\"0000:02:01.0\"")
        && l.contains("\"verdict\":\"shares-group\"")
        && l.contains("\"group_with\":[\"0000:02:02.0\"]")));
    assert!(lines
        .last()
        .is_some_and(|l| l.contains("\"type\":\"summary\"") && l.contains("\"assignable\":2")));
}

#[test]
fn acs_is_found_in_the_extended_capabilities_and_named() {
    let mut cfg = vec![0u32; 1024];
    // AER at 0x100 -> ACS at 0x148 (capability 0x001f: SV TB RR CR UF).
    cfg[0x100 / 4] = 0x0001 | 1 << 16 | 0x148 << 20;
    cfg[0x148 / 4] = 0x000D | 1 << 16;
    cfg[0x14C / 4] = 0x001F;
    let read = |off: u16| cfg.get(off as usize / 4).copied();
    assert_eq!(find_acs(read), Some(0x1F));
    assert_eq!(
        acs_words(0x1F),
        "SrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-"
    );
    // A loop, a list of all ones, and a config space that ends early.
    cfg[0x148 / 4] = 0x0002 | 0x100 << 20;
    assert_eq!(find_acs(|o: u16| cfg.get(o as usize / 4).copied()), None);
    assert_eq!(find_acs(|_| Some(u32::MAX)), None);
    assert_eq!(find_acs(|o: u16| (o < 0x104).then_some(0x0001 | 0x200 << 20)), None);
}

#[test]
fn json_strings_are_escaped() {
    let mut s = String::new();
    render::json_string(&mut s, "a\"b\\c\nd\u{1}");
    assert_eq!(s, "\"a\\\"b\\\\c\\nd\\u0001\"");
}

#[test]
fn garbage_tables_never_panic() {
    let good = include_all_dmar(&[]);
    for len in 0..good.len() {
        for flip in [0u8, 0xff] {
            let mut t = good[..len].to_vec();
            if let Some(b) = t.get_mut(len / 2) {
                *b ^= flip;
            }
            crate::acpi::testutil::fix_checksum(&mut t);
            for (dmar, ivrs) in [(Some(&t[..]), None), (None, Some(&t[..]))] {
                let facts = MachineFacts { functions: q35(), dmar, ivrs, ..Default::default() };
                let a = assess(&facts);
                let _ = report_lines(&facts, &a, &[]);
                let _ = json_lines(&facts, &a, &[]);
                let _ = skeleton(&facts, &a);
            }
        }
    }
}

#[test]
fn groups_are_the_ones_the_kernel_enforces_multi_function_devices_without_acs_go_together() {
    let table = include_all_dmar(&[]);
    let two_functions = |acs: Option<u16>| {
        let mut f0 = edu(bdf(0, 3, 0));
        let mut f1 = edu(bdf(0, 3, 1));
        (f0.acs, f1.acs) = (acs, acs);
        vec![function(bdf(0, 0, 0), (0x8086, 0x29c0), (0x06, 0x00, 0x00)), f0, f1]
    };
    let facts =
        MachineFacts { functions: two_functions(None), dmar: Some(&table), ..Default::default() };
    let a = assess(&facts);
    // Each has its own requester id, but nothing stops peer-to-peer DMA between them.
    assert_eq!(a.devices[1].verdict, Verdict::SharesGroup(vec!["0000:00:03.1".into()]));
    assert_eq!(a.devices[2].verdict, Verdict::SharesGroup(vec!["0000:00:03.0".into()]));
    let facts = MachineFacts {
        functions: two_functions(Some(0x1d)),
        dmar: Some(&table),
        ..Default::default()
    };
    let a = assess(&facts);
    assert_eq!(verdicts(&a)[1..], ["assignable", "assignable"]);
}
