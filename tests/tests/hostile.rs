//! Hostile guests under both IOMMUs (QEMU TCG, `-cpu max`, which offers SVM with nested
//! paging, XSAVE with AVX and PKRU, FSGSBASE: the in-kernel tests check each feature
//! they rely on from inside the guest): partition A's CPU state never reaches B or the
//! host (and, with the world switch turned off, does: the control), every intercepted
//! instruction is refused or emulated as documented with the host up and unchanged, and
//! guest log text is shown escaped as the guest's without fooling these checks.

use tests::*;

/// `hostile_device_reassignment` and `hostile_flr_on_release` last: they leave edu 00:04.0
/// marked as not reset.
const HOSTILE_TESTS: &str = "hostile_state_isolation,hostile_state_control,hostile_instructions,\
hostile_exception_loops_control,hostile_log_is_data,hostile_no_host_addresses,hostile_switch_cost,hostile_device_reassignment,\
hostile_flr_on_release";

/// The forged host line the `LOG_FORGE` guest prints.
const FORGED: &str = "partitions: the device-assignment story held";

/// The harness's machine (q35, `-cpu max`, edu at 00:04.0) plus QEMU's NVMe controller at
/// 00:06.0 (no drive: a controller with no namespace), whose PCI Express capability offers
/// function-level reset; the test checks that from its capabilities.
fn hostile_machine(iommu: Iommu) -> Machine {
    let mut m = machine(iommu, HOSTILE_TESTS);
    m.extra = vec!["-device".into(), "nvme,serial=hostile0,addr=0x6".into()];
    m
}

fn judge(out: &Outcome) {
    assert_passed(out);
    assert_logged(out, "hostile: B found XMM/YMM holding the secret 0, x87 ST0 0");
    assert_logged(
        out,
        "hostile: control (world switch off): B found XMM/YMM holding the secret 17",
    );
    assert_logged(out, "hostile: host up, its state unchanged after 11 attacks");
    assert_logged(out, "hostile: control (#DB not forced): the #DB guest ended BudgetExhausted");
    assert_logged(
        out,
        "hostile: boot-page probes: other image (0, 0), built-in program (12345000, 6789a000)",
    );
    // edu (QEMU's, one at 00:04.0: the harness's default machine) offers no reset: the
    // device is refused to another partition, and the control reads the secret.
    assert_logged(out, "hostile: 0000:00:04.0 offers no reset");
    assert_logged(out, "partition leaver: 0000:00:04.0 not reset (it offers no FLR, no AF FLR and no PM soft reset)");
    assert_logged(out, "hostile: taker asks for 0000:00:04.0: Err(\"0000:00:04.0 could not be reset after partition leaver owned it");
    assert_logged(
        out,
        "hostile: control: a partition that accepts unreset devices read Some(2048) secret bytes",
    );
    // Guest text: quoted and escaped after the partition's name, never a line of its own.
    // (The raw log: `assert_logged` reads only the host's text.)
    for shown in [
        "partition forger: guest says: \"line one\\n[INFO ] partitions: the device-assignment story held\\nline three\"",
        "partition forger: guest says: \"\\u{1b}[2J\\u{1b}[H\\r[INFO ]",
        "partition forger: guest says: \"1 passed, 0 failed\\\" end \\\\ quote\\t\\u{7}\\u{7f}\"",
    ] {
        assert!(out.log.contains(shown), "expected `{shown}` in the serial log\n{}", out.log);
    }
    assert!(!out.log.contains('\u{1b}'), "a raw escape character reached the console");
    for l in out.log.lines() {
        assert!(
            !l.trim_start().starts_with("[INFO ] partitions:"),
            "a guest forged a host line: {l}"
        );
    }
    // The control: the forged text is in the raw log, so a check on the raw log would
    // have been fooled; the host's own text has no such line.
    assert!(out.log.contains(FORGED), "the forger's text is missing");
    assert!(!host_text(&out.log).contains(FORGED), "a guest's text passed for the host's");
    for l in out.log.lines().filter(|l| l.contains("bench world_switch")) {
        eprintln!("{}", l.trim());
    }
}

#[test]
fn hostile_guests_through_vtd() {
    judge(&boot(&hostile_machine(Iommu::Intel { aw_bits: None, caching_mode: false })));
}

#[test]
fn hostile_guests_through_amdvi() {
    // intremap=on: assignment needs complete interrupt remapping, and only then does
    // QEMU's IVRS name the IOAPIC (the kernel refuses assignment otherwise).
    judge(&boot(&hostile_machine(Iommu::Amd { intremap: true })));
}
