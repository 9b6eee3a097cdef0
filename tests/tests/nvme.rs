//! QEMU's NVMe controller driven by the hypervisor's own admin driver through a
//! partition's IOMMU domain (VT-d, and AMD-Vi with `intremap=on` as assignment requires):
//! Identify lands at the mapped IOVA with the serial set here, Identify at an unmapped
//! IOVA writes nothing and faults, and the release quiesces the controller (shutdown,
//! disable, bus mastering off) before its FLR, after which the next owner enables it.
//! In-kernel tests: `kernel/src/tests/nvme_tests.rs`.

use tests::*;

const NVME_TESTS: &str = "nvme_identify_through_domain,nvme_quiesce_on_release";

/// Where the controller sits, and the properties the tests rely on, each stated:
/// `serial` (the Identify data must carry it: `nvme_tests::SERIAL`), `use-intel-id=off`
/// (vendor 1b36, checked in the Identify data), `cmb_size_mb=0` (no controller memory
/// buffer, so every PRP names host memory through the IOMMU), `sriov_max_vfs=0` (one
/// function, no virtual functions). No drive: a controller with no namespace.
const NVME_DEVICE: &str =
    "nvme,addr=0x6,serial=nvmehost0,use-intel-id=off,cmb_size_mb=0,sriov_max_vfs=0";

fn nvme_machine(iommu: Iommu) -> Machine {
    let mut m = machine(iommu, NVME_TESTS);
    m.extra = vec!["-device".into(), NVME_DEVICE.into()];
    m
}

fn judge(out: &Outcome) {
    assert_passed(out);
    // The machine as the tests rely on it, checked from inside.
    assert_logged(out, "pci: 0000:00:06.0 1b36:0010 class 010802");
    assert_logged(out, "nvme: 0000:00:06.0 offers PCIe capability yes (FLR yes)");
    assert_logged(out, "serial \"nvmehost0\", model \"QEMU NVMe Ctrl\"");
    // (b) and its fault.
    assert_logged(out, ", frame untouched true, ");
    // (c): the release's order, in the log as it happened.
    let host = host_text(&out.log);
    let quiesced = host
        .find("reset: 0000:00:06.0 quiesced (nvme): found CC 0x460001 CSTS 0x1, shut down")
        .expect("the release quiesced the controller");
    // The FLR comes after the quiesce (searched for only in the text that follows it).
    host[quiesced..]
        .find("partition nvme-owner: 0000:00:06.0 reset by function-level reset (PCIe)")
        .expect("the FLR after the quiesce");
    assert_logged(
        out,
        "nvme: after release: CC.EN, CSTS.RDY, bus mastering = (false, false, false)",
    );
    for l in out.log.lines().filter(|l| l.contains("nvme: ") || l.contains("quiesced")) {
        eprintln!("{}", l.trim());
    }
}

#[test]
fn nvme_through_vtd() {
    let out = boot(&nvme_machine(Iommu::Intel { aw_bits: None, caching_mode: false }));
    judge(&out);
    // VT-d records the refused write (one fault, from the controller's requester id).
    assert_logged(&out, "1 fault(s) recorded for 0x0030");
}

#[test]
fn nvme_through_amdvi() {
    // intremap=on: assignment needs complete interrupt remapping, and only then does
    // QEMU's IVRS name the IOAPIC (the kernel refuses assignment otherwise).
    let out = boot(&nvme_machine(Iommu::Amd { intremap: true }));
    judge(&out);
}
