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
        format!("{GENERIC},iommu_teardown_fragmented,iommu_teardown_control,iommu_teardown_strategies,iommu_reserved_identity,vtd_isolation,vtd_no_context,vtd_fault_storm");
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
