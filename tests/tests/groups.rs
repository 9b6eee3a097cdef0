//! Isolation groups on QEMU's VT-d (q35, intel-iommu): two edu devices behind one
//! `pcie-pci-bridge` (00:06.0, secondary bus 1) reach the IOMMU with the bridge's
//! requester id (01:00.0 = 0x0100), so the IOMMU cannot tell them apart. Given to two
//! partitions they are refused before anything starts, with the group named; given to one
//! partition they are accepted, every id their DMA may carry points at the partition's
//! domain, and the guest's DMA lands in its own memory and nowhere else. A root port with
//! ACS (enabled by the boot) keeps the edu behind it in a group of its own.
//!
//! On AMD-Vi the refusal and the acceptance are shown too, but not the accepted guest's
//! DMA landing: QEMU's amd-iommu (7.2 and 10.0) looks devices behind bridges up under bus
//! number 0 (it keys each device's address space by the bus number at creation, before
//! firmware numbered the buses), so DMA behind a bridge reaches no device table entry the
//! IVRS names there.

use std::path::{Path, PathBuf};
use tests::*;

/// The bridge and its two edu devices, after the root-bus edu at slot 4.
const BRIDGE: &[&str] = &[
    "-device",
    "pcie-pci-bridge,id=pb,addr=0x6",
    "-device",
    "edu,bus=pb,addr=0x1,dma_mask=0xffffffffffff",
    "-device",
    "edu,bus=pb,addr=0x2,dma_mask=0xffffffffffff",
    // A root port (QEMU's has an ACS capability) with an edu behind it, on bus 2.
    "-device",
    "pcie-root-port,id=rp,addr=0x7,chassis=1",
    "-device",
    "edu,bus=rp,addr=0x0,dma_mask=0xffffffffffff",
];

fn config_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("groups-{}-{name}.cfg", std::process::id()));
    std::fs::write(&path, text).expect("write the configuration");
    path
}

fn bridge_machine(cfg: &Path) -> Machine {
    bridge_machine_with(cfg, Iommu::Intel { aw_bits: None, caching_mode: false })
}

fn bridge_machine_with(cfg: &Path, iommu: Iommu) -> Machine {
    let mut m = Machine::new(&kernel(), iommu);
    m.extra = BRIDGE.iter().map(|s| s.to_string()).collect();
    m.extra.extend(["-initrd".to_string(), cfg.display().to_string()]);
    m
}

/// The group's members as every message names them (after its number).
const GROUP: &str = "(0000:00:06.0 0000:01:01.0 0000:01:02.0)";

#[test]
fn one_group_split_across_two_partitions_is_refused() {
    let cfg = config_file(
        "split",
        "partition alpha\n  memory 16M\n  device 01:01.0\npartition beta\n  memory 16M\n  device 01:02.0\n",
    );
    let out = boot(&bridge_machine(&cfg));
    let _ = std::fs::remove_file(&cfg);
    eprintln!("split group on {}: {:?}", out.qemu_version, out.verdict);
    // The boot saw what the hardware does: both devices reach the unit as 0x0100.
    assert_logged(&out, "iommu: 0000:01:01.0 -> unit 0 as requester id 0x0100");
    assert_logged(&out, "iommu: 0000:01:02.0 -> unit 0 as requester id 0x0100");
    let named = out
        .log
        .lines()
        .find(|l| l.contains("iommu: isolation group ") && l.ends_with(GROUP))
        .unwrap_or_else(|| panic!("the group is not logged\n{}", out.log));
    let number = named.split("isolation group ").nth(1).and_then(|r| r.split(' ').next());
    let group = format!("isolation group {} {GROUP}", number.unwrap_or("?"));
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(
        &out,
        &format!(
            "partition `alpha`: device 0000:01:01.0 and partition `beta`: device 0000:01:02.0 are in one {group}"
        ),
    );
    assert!(!out.log.contains("created"), "a partition was created: {}", out.log);
}

#[test]
fn one_group_in_one_partition_is_accepted_and_confined() {
    let cfg =
        config_file("whole", "partition solo\n  memory 16M\n  device 01:01.0\n  device 01:02.0\n");
    let out = boot(&bridge_machine(&cfg));
    let _ = std::fs::remove_file(&cfg);
    eprintln!("whole group on {}: {:?}", out.qemu_version, out.verdict);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, "iommu: 0000:01:01.0 DMA may carry requester ids [0100, 0108]");
    // ACS was enabled on the root port (read back), so the edu behind it is alone.
    assert_logged(&out, "functions (ACS enabled on 1)");
    assert_logged(&out, "iommu: 0000:02:00.0 -> unit 0 as requester id 0x0200");
    let grouped = out.log.lines().filter(|l| l.contains("iommu: isolation group "));
    assert!(
        grouped.clone().all(|l| !l.contains("02:00.0") && !l.contains("00:07.0")),
        "{:?}",
        grouped.collect::<Vec<_>>()
    );
    // Every id of both devices points at the partition's one domain.
    assert_logged(
        &out,
        "0000:01:01.0 attached to IOMMU domain 1 (unit 0, requester id 0x0100 and 0x0108)",
    );
    assert_logged(
        &out,
        "0000:01:02.0 attached to IOMMU domain 1 (unit 0, requester id 0x0100 and 0x0110)",
    );
    // The guest's DMA through its device (as 0x0100) lands in its own memory (the
    // control: all 2048 bytes arrive) and its forbidden DMAs change nothing.
    // One interrupting device per partition: the second one's interrupts are refused,
    // said at attach (docs/partitions.md).
    assert_logged(
        &out,
        "partition solo: 0000:01:02.0: interrupts stay off: only the partition's first device",
    );
    assert_logged(&out, "partition solo: guest reports dma_own_matched = 0x800");
    assert_logged(&out, "partition solo: its DMA landed at guest-physical 0x1ff000");
    assert_logged(&out, ": 2048 of 2048 bytes");
    assert_logged(&out, "partition solo: guest reports dma_outside_nonzero = 0x0");
    assert_logged(&out, "partition solo: guest reports dma_hypervisor_nonzero = 0x0");
    assert_logged(&out, "partition solo: DMA write to hypervisor memory");
    assert!(
        !out.log.contains("DMA write to hypervisor memory (host 0x")
            || out.log.contains(": 0 bytes changed")
    );
    assert_logged(&out, "partition solo: destroyed:");
}

/// The same split on AMD-Vi (intremap on: assignment needs it): the configuration check
/// runs before anything starts and needs only the topology, so the refusal holds whatever
/// QEMU's amd-iommu does with DMA behind the bridge.
#[test]
fn amdvi_one_group_split_across_two_partitions_is_refused() {
    let cfg = config_file(
        "amd-split",
        "partition alpha\n  memory 16M\n  device 01:01.0\npartition beta\n  memory 16M\n  device 01:02.0\n",
    );
    let out = boot(&bridge_machine_with(&cfg, Iommu::Amd { intremap: true }));
    let _ = std::fs::remove_file(&cfg);
    eprintln!("split group on AMD-Vi, {}: {:?}", out.qemu_version, out.verdict);
    assert_logged(&out, "iommu: 0000:01:01.0 -> unit 0 as requester id 0x0100");
    assert_logged(&out, "iommu: 0000:01:02.0 -> unit 0 as requester id 0x0100");
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "partition `alpha`: device 0000:01:01.0 and partition `beta`: device 0000:01:02.0 are in one isolation group");
    assert!(!out.log.contains("created"), "a partition was created: {}", out.log);
}

/// The whole group in one partition on AMD-Vi is accepted, and every id its DMA may carry
/// (the bridge's 0x0100 and each device's own) points at the partition's one domain. What
/// QEMU cannot show here (7.2 and 10.0 alike, seen): the guest's own DMA landing. QEMU's
/// amd-iommu looks a device behind the bridge up under bus 0 (01:01.0 as 00:01.0, which is
/// the IOMMU's own id), so that DMA is refused like every other; the story then reports
/// 0 of 2048 bytes and the run fails on that line alone. With no DMA of this device
/// landing at all, its forbidden DMAs changing nothing would prove nothing, so they are not
/// asserted here: the VT-d test above proves confinement through the bridge, with its
/// control. Should QEMU fix the lookup, the "0 of 2048" assertion fails and says so.
#[test]
fn amdvi_one_group_in_one_partition_is_accepted() {
    let cfg = config_file(
        "amd-whole",
        "partition solo\n  memory 16M\n  device 01:01.0\n  device 01:02.0\n",
    );
    let out = boot(&bridge_machine_with(&cfg, Iommu::Amd { intremap: true }));
    let _ = std::fs::remove_file(&cfg);
    eprintln!("whole group on AMD-Vi, {}: {:?}", out.qemu_version, out.verdict);
    assert!(!out.log.contains("are in one isolation group"), "refused: {}", out.log);
    assert_logged(
        &out,
        "0000:01:01.0 attached to IOMMU domain 1 (unit 0, requester id 0x0100 and 0x0108)",
    );
    assert_logged(
        &out,
        "0000:01:02.0 attached to IOMMU domain 1 (unit 0, requester id 0x0100 and 0x0110)",
    );
    assert_logged(&out, "partition solo: its DMA landed at guest-physical 0x1ff000");
    assert_logged(&out, ": 0 of 2048 bytes");
}
