//! `mode=report`: the machine is looked at and nothing is programmed; every device gets a
//! verdict and the report ends with a configuration skeleton that, fed back as the
//! configuration module, boots and tells the partition story.
//!
//! Machine: q35 (`-cpu max`: SVM with nested paging under TCG), edu at 00:04.0 and
//! 00:05.0 on the root bus, and a `pcie-root-port` (00:06.0) with a `pcie-pci-bridge`
//! (01:00.0) and two edus behind it (02:01.0, 02:02.0). Behind a PCIe-to-PCI bridge
//! both edus' DMA carries the bridge's alias requester id (secondary bus 2, 00.0), so
//! they share an isolation group and neither can be assigned alone.

use std::path::PathBuf;
use tests::*;

fn intel() -> Iommu {
    Iommu::Intel { aw_bits: None, caching_mode: false }
}

const BEGIN: &str = "---- configuration skeleton ----";
const END: &str = "---- end of configuration skeleton ----";

fn bridged_machine(iommu: Iommu, cmdline: &str) -> Machine {
    let mut m = Machine::new(&kernel(), iommu);
    m.edu = vec![Edu { slot: 4 }, Edu { slot: 5 }];
    m.cmdline = cmdline.into();
    for d in [
        "pcie-root-port,id=rp,slot=1,addr=0x6",
        "pcie-pci-bridge,id=br,bus=rp",
        "edu,bus=br,addr=1,dma_mask=0xffffffffffff",
        "edu,bus=br,addr=2,dma_mask=0xffffffffffff",
    ] {
        m.extra.extend(["-device".to_string(), d.to_string()]);
    }
    m
}

/// Panics with the log unless one line contains every part. (Unit numbers are left out:
/// QEMU 10.0's IVRS has an IVHD of type 0x10 and one of 0x11, so its unit is IVHD 1.)
fn assert_line(out: &Outcome, parts: &[&str]) {
    if !out.log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
        panic!("no line with all of {parts:?}\n----- serial log -----\n{}", out.log);
    }
}

/// Whether the QEMU under test is 7.2, the version the sysfs trees were recorded on
/// (QEMU 10.0's amd-iommu adds an IVHD and changes its own PCI id).
fn qemu_is_7_2() -> bool {
    std::process::Command::new(xtask::tools::qemu_binary())
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("version 7.2"))
}

fn skeleton(out: &Outcome) -> String {
    let lines: Vec<&str> =
        out.log.lines().skip_while(|l| *l != BEGIN).skip(1).take_while(|l| *l != END).collect();
    assert!(!lines.is_empty(), "no skeleton in\n{}", out.log);
    lines.join("\n") + "\n"
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/report-test");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// The `assign:` lines without their group numbers (which follow enumeration order),
/// sorted: address, ids, class, unit, requester id, verdict.
fn verdicts<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = lines
        .filter(|l| l.starts_with("assign: 0"))
        .map(|l| {
            match (
                l.find(", group "),
                l.find("group ").and_then(|g| l[g..].find(": ").map(|c| g + c)),
            ) {
                (Some(a), Some(b)) => format!("{}{}", &l[..a], &l[b..]),
                _ => l.to_string(),
            }
        })
        .map(|l| l.replace("shares an isolation group", "shares a group"))
        .collect();
    v.sort();
    v
}

/// The report's verdicts on the bridged machine, then the skeleton fed back.
fn report_then_run(iommu: Iommu, prefix: &str, untouched: &str, name: &str) {
    let out = boot(&bridged_machine(iommu.clone(), "mode=report"));
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    // The same machine as Linux saw it (recorded sysfs tree): the same verdicts.
    let tree = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../xtask/testdata/machines")
        .join(if prefix == "DMAR" { "qemu72-vtd-bridge" } else { "qemu72-amdvi-bridge" });
    let linux = xtask::machine_report::report(&tree, false).expect("inspect --machine");
    let (ours, theirs) = (verdicts(out.log.lines()), verdicts(linux.iter().map(String::as_str)));
    assert!(ours.len() >= 10, "{ours:#?}");
    if qemu_is_7_2() {
        assert_eq!(ours, theirs, "mode=report and inspect --machine disagree");
    }
    assert_logged(&out, "==== machine report (mode=report: nothing is programmed) ====");
    assert_logged(&out, "cpu: AMD SVM: yes, nested paging (NPT): yes");
    assert_line(&out, &[&format!("{prefix}: unit "), " at 0xfed"]);
    let edu = "1234:11e8 unclassified device [00ff00], unit ";
    for (bdf, rid) in [("00:04.0", "0x0020"), ("00:05.0", "0x0028")] {
        assert_line(&out, &[&format!("assign: 0000:{bdf} {edu}"), rid, ": assignable"]);
    }
    for (bdf, other) in [("02:01.0", "02:02.0"), ("02:02.0", "02:01.0")] {
        assert_line(
            &out,
            &[
                &format!("assign: 0000:{bdf} {edu}"),
                "requester id 0x0200",
                &format!(
                    "shares an isolation group with 0000:{other} (the IOMMU cannot keep their DMA apart)"
                ),
            ],
        );
    }
    assert_line(&out, &["assign: 0000:01:00.0 1b36:000e PCI bridge [060400]", "a bridge"]);
    // QEMU's pcie-root-port has an ACS capability (read from extended config space).
    assert_line(
        &out,
        &["assign: 0000:00:06.0 1b36:000c PCI bridge", ", ACS SrcValid+ TransBlk+ ReqRedir+"],
    );
    // 00:1f is a multi-function device without ACS: its functions are one group (the
    // same grouping the kernel enforces at assignment).
    assert_line(
        &out,
        &[
            "assign: 0000:00:1f.2 8086:2922 SATA controller [010601]",
            "0x00fa",
            "shares an isolation group with 0000:00:1f.3",
        ],
    );
    assert_line(&out, &["assign: 0000:00:1f.3 8086:2930 SMBus [0c0500]", "no memory BAR"]);
    // Nothing was programmed: no unit brought up, none enabled, no partition.
    assert_logged(&out, untouched);
    assert_logged(&out, "report: done: 2 of ");
    for never in ["DMAR: unit at", "AMD-Vi: unit at", "svm: enabled", "created", "edu: 0000"] {
        assert!(!out.log.contains(never), "`{never}` in a report boot:\n{}", out.log);
    }
    let text = skeleton(&out);
    assert!(
        text.contains("partition dev-00-04-0") && text.contains("partition dev-00-05-0"),
        "{text}"
    );
    assert!(!text.contains("dev-00-1f-2"), "a function of an unsplittable group: {text}");
    assert!(!text.contains("02:01.0") && !text.contains("02:02.0"), "{text}");
    let cfg = scratch(&format!("{name}.cfg"));
    std::fs::write(&cfg, &text).expect("write the skeleton");
    let mut run = bridged_machine(iommu, "");
    run.extra.extend(["-initrd".into(), cfg.display().to_string()]);
    let out = boot(&run);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, &format!("partitions: configuration from the module {name}.cfg"));
    for p in ["dev-00-04-0", "dev-00-05-0"] {
        assert_logged(&out, &format!("partition {p}: stopped: Done(0)"));
        assert_logged(&out, &format!("partition {p}: guest reports dma_own_matched = 0x800"));
    }
    assert_logged(&out, "partitions: the device-assignment story held");
}

#[test]
fn report_on_vtd_with_a_pcie_pci_bridge_and_its_skeleton_runs() {
    report_then_run(
        intel(),
        "DMAR",
        "untouched: GSTS 0x0, translation enable (TES) clear",
        "skeleton-vtd",
    );
}

#[test]
fn report_on_amdvi_with_a_pcie_pci_bridge_and_its_skeleton_runs() {
    // intremap=on: assignment needs complete interrupt remapping, and only then does
    // QEMU's IVRS name the IOAPIC (the kernel refuses assignment otherwise).
    report_then_run(
        Iommu::Amd { intremap: true },
        "AMD-Vi",
        "untouched: CONTROL 0x0, IommuEn clear",
        "skeleton-amdvi",
    );
}

#[test]
fn report_as_json_lines() {
    let out = boot(&bridged_machine(intel(), "report=json"));
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    let json: Vec<&str> = out.log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(json.iter().all(|l| l.starts_with("{\"type\":\"") && l.ends_with('}')), "{json:#?}");
    assert!(json.iter().any(|l| l.starts_with("{\"type\":\"unit\",")
        && l.contains("\"architecture\":\"vt-d\"")
        && l.contains("\"cap\":\"0x")));
    assert!(json.iter().any(|l| l.contains("\"address\":\"0000:02:01.0\"")
        && l.contains("\"requester_id\":\"0x0200\"")
        && l.contains("\"verdict\":\"shares-group\"")
        && l.contains("\"group_with\":[\"0000:02:02.0\"]")));
    assert!(json
        .iter()
        .any(|l| l.contains("\"address\":\"0000:00:04.0\"")
            && l.contains("\"verdict\":\"assignable\"")));
    assert!(json.iter().any(|l| l.starts_with("{\"type\":\"fact\",\"text\":\"cpu: ")));
    assert!(
        json.last().is_some_and(
            // The two root-bus edus; the SATA controller shares 00:1f's group.
            |l| l.starts_with("{\"type\":\"summary\"") && l.contains("\"assignable\":2")
        ),
        "{json:#?}"
    );
    assert!(!out.log.contains(BEGIN), "text skeleton in the JSON form");
}

/// A machine whose ACPI tables do not say QEMU (`-machine x-oem-id=REALHW`: QEMU writes
/// that OEM id into every table instead of "BOCHS ") boots into the report when no
/// configuration module is given: the QEMU default partitions are never handed whatever
/// sits at 00:04.0 and 00:05.0. With a configuration module the same machine runs it.
#[test]
fn a_machine_that_is_not_qemu_reports_unless_configured() {
    let mut m = bridged_machine(intel(), "");
    m.extra.extend(["-machine".into(), "x-oem-id=REALHW".into()]);
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, "acpi: OEM \"REALHW\"");
    assert_logged(&out, "boot: not QEMU and no configuration module: report mode");
    assert_logged(&out, "report: done: ");
    assert!(!out.log.contains("created") && !out.log.contains("edu: 0000"), "{}", out.log);
    // Control: the same machine with a configuration runs it.
    let cfg = scratch("realhw.cfg");
    std::fs::write(&cfg, "partition one\n  memory 8M\n  device 00:04.0\n").expect("cfg");
    m.extra.extend(["-initrd".into(), cfg.display().to_string()]);
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, "partitions: configuration from the module realhw.cfg");
    assert_logged(&out, "partition one: stopped: Done(0)");
    assert!(!out.log.contains("report mode"), "{}", out.log);
}
