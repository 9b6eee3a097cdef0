//! Intel VT-d under QEMU's intel-iommu, proven with DMA from edu devices: translation,
//! invalidation (page, domain, global, and the suppressed control), re-attach, tracker
//! teardown of 1 GiB, isolation and fault records, a device without a context entry, and
//! a fault storm; at aw-bits 39 (3-level) and 48 (4-level), with caching-mode=on, and with
//! register-based invalidation. Plus the `cargo xtask qemu` passthrough demonstration.

use tests::*;

/// Tests that are the same on every VT-d configuration.
const GENERIC: &str = "iommu_translate_4k,iommu_translate_2m,iommu_translate_1g,\
iommu_invalidate_page,iommu_invalidate_domain,iommu_invalidate_global,iommu_invalidate_control,\
iommu_reattach,iommu_teardown_contiguous";

fn intel(aw_bits: Option<u8>, caching_mode: bool, tests: &str) -> Machine {
    let mut m = machine(Iommu::Intel { aw_bits, caching_mode }, tests);
    m.memory_mib = 3072;
    m.edu = vec![Edu { slot: 4 }, Edu { slot: 5 }];
    m
}

/// Boots `m`, noting its run time for whoever runs with `--nocapture`.
fn run(name: &str, m: &Machine) -> Outcome {
    let out = boot(m);
    eprintln!("vtd suite: {name}: {:.1?}", out.elapsed);
    out
}

/// The log lines between `running test NAME` and its verdict.
fn section<'a>(out: &'a Outcome, name: &str) -> Vec<&'a str> {
    let start = format!("running test {name}");
    let end = format!("test {name} ...");
    out.log
        .lines()
        .skip_while(|l| !l.contains(&start))
        .take_while(|l| !l.starts_with(&end))
        .collect()
}

#[test]
fn default_unit_everything() {
    let tests =
        format!("{GENERIC},iommu_teardown_fragmented,iommu_teardown_control,iommu_teardown_strategies,iommu_reserved_identity,vtd_isolation,vtd_no_context,vtd_fault_storm,ir_forgery,ir_msi,ir_handoff,ir_storm,vtd_takeover");
    let out = run("default", &intel(None, false, &tests));
    assert_passed(&out);
    assert_logged(&out, "3-level tables, Queued invalidation");
    assert_logged(&out, "teardown Contiguous: 1 GiB of 4K pages, fgsp probe false");
    assert_logged(&out, "teardown Fragmented: 1 GiB of 4K pages, fgsp probe false");
    assert_logged(&out, "fgsp probe on a VT-d domain with all page sizes: false");
    assert_logged(&out, "teardown control (invalidation suppressed): DMA still landed at 6 of 6");
    assert_logged(&out, "[fault reason 0x02] context entry not present");
    assert_logged(&out, "fault storm: 200 faulting DMAs, 190 records + 10 overflows counted");
    // The storm's console output: a handful of fault lines, not one per fault.
    let storm = section(&out, "vtd_fault_storm");
    // Fault lines in Linux's shape: "DMAR: [DMA Write NO_PASID] Request device [...]".
    let fault_lines = storm.iter().filter(|l| l.contains("DMAR: [DMA ")).count();
    assert!(fault_lines > 0 && fault_lines <= 60, "{fault_lines} fault lines in the storm");
    assert!(storm.iter().any(|l| l.contains("fault messages suppressed")), "{storm:#?}");
    // Last (it replaces the unit's driver): the unit left translating with its queue
    // halted on an invalid descriptor is taken over and still confines DMA.
    let takeover = section(&out, "vtd_takeover");
    for needle in [
        "takeover: queue halted on an invalid descriptor (FSTS 0x10), translation on",
        "firmware left translation on; it stayed on",
        "firmware's invalidation queue was running; stopped once drained",
        "stale FSTS error bits 0x10",
    ] {
        assert!(takeover.iter().any(|l| l.contains(needle)), "no `{needle}`: {takeover:#?}");
    }
    assert_forgery_refused(&out);
}

/// Interrupt remapping is on, remappable-format forgeries (0xFF, the timer vector, an
/// NMI, the counting vector) are refused, and the control with IRE clear shows the test
/// can fail. What QEMU cannot prove is reported by the test and checked here as what this
/// QEMU does: compatibility format passes with IRE set and CFIS clear (no CFI gate in 7.2
/// or 10.0), and a DMA store carries no requester id, so source ids are not verified.
/// QEMU 10.0 records the refusals (reasons 0x22 and 0x21, source ff:1f.7 = no id); 7.2
/// records none.
fn assert_forgery_refused(out: &Outcome) {
    assert_logged(out, "storm: 2000 device interrupts at host vector 48: all taken");
    assert_logged(out, "handoff: a unit left with IR on and a stale entry (handle 5 -> vector 46, delivered) was taken over");
    // The edu device's own MSI (which carries its requester id) through an entry of its
    // own: delivered; from the other edu naming that entry: refused (source id verified,
    // recorded as 0x26 by QEMU 10.0); entry removed: refused.
    assert_logged(out, "msi: edu 0x0020 -> handle 8 -> vector 46: delivered (1 at the gate); edu 0x0028 naming that handle: refused; naming an absent one: refused; handle removed: refused");
    let (major, _) = qemu_version(out);
    if major >= 10 {
        assert_logged(out, "interrupt request refused from 00:05.0 (index 0x8): reason 0x26 (interrupt: source id verification failed)");
    }
    assert_logged(out, "interrupt remapping enabled (256 entries, xAPIC destinations");
    assert_logged(out, "forgery: 5 remappable requests (0xFF, timer, NMI, counting vector; handles 0 and 300) refused");
    assert_logged(out, "forgery: compatibility-format probe ");
    assert_logged(
        out,
        "forgery: control with interrupt remapping off: the forged interrupt arrived",
    );
    match major {
        v if v >= 10 => {
            assert_logged(
                out,
                "(index 0x0): reason 0x22 (interrupt: remapping table entry not present)",
            );
            assert_logged(
                out,
                "(index 0x12c): reason 0x21 (interrupt: index beyond the remapping table size)",
            );
        }
        7 => assert_logged(out, "fault records of interrupt reasons []"),
        v => eprintln!("vtd suite: QEMU major version {v}: interrupt fault records not checked"),
    }
}

#[test]
fn four_level_tables_with_aw_bits_48() {
    let tests = format!("{GENERIC},vtd_isolation");
    let out = run("aw-bits=48", &intel(Some(48), false, &tests));
    assert_passed(&out);
    assert_logged(&out, "4-level tables, Queued invalidation");
}

#[test]
fn caching_mode_on() {
    let tests = format!("{GENERIC},vtd_isolation,vtd_no_context");
    let out = run("caching-mode=on", &intel(None, true, &tests));
    assert_passed(&out);
    assert_logged(&out, "caching mode (CM): yes");
}

#[test]
fn register_based_invalidation() {
    let tests = format!("{GENERIC},vtd_isolation");
    let mut m = intel(None, false, &tests);
    m.cmdline.push_str(" vtd-invalidation=register");
    let out = run("register invalidation", &m);
    assert_passed(&out);
    assert_logged(&out, "3-level tables, Register invalidation");
    // No interrupt-entry-cache invalidation without the queue: remapping stays off.
    assert_logged(&out, "interrupt remapping off: register-based invalidation cannot invalidate the interrupt entry cache");
}

#[test]
fn qemu_run_ends_with_the_passthrough_demo() {
    let mut m = intel(None, false, "");
    m.cmdline.clear();
    let out = run("demo", &m);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(
        &out,
        "the destination frame reads \"hello from the edu device, through the IOMMU\"",
    );
    assert_logged(&out, "the DMA was blocked");
    assert_logged(&out, "demo: the unit recorded the blocked DMA: write at IOVA 0x10001000");
    assert_logged(&out, "boot complete");
}
