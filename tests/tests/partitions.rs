//! Guest partitions under SVM with nested paging (QEMU TCG, `-cpu max`): the in-kernel
//! partition tests, the default two-partition boot, and configurations passed as boot
//! modules (QEMU `-initrd` with Multiboot1), including refused ones.

use std::path::PathBuf;
use tests::*;

const PARTITION_TESTS: &str = "partition_guest_4k,partition_guest_2m,partition_vmmcall,\
partition_hlt_exit,partition_shutdown_exit,partition_runaway_budget,partition_destroy_scrubs,\
partition_device_bar,partition_unmapped_access,partition_bad_image,partition_config,\
partition_unassigned_blocked,partition_destroy_defers_scrub,partition_builtin_refuses_non_edu,\
partition_event_redelivery,partition_event_redelivery_control,vmx_vpid_allocation";

fn intel() -> Iommu {
    Iommu::Intel { aw_bits: None, caching_mode: false }
}

/// A configuration file for `-initrd`, unique to this test process.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("partitions-{}-{name}.cfg", std::process::id()));
    std::fs::write(&path, text).expect("write the configuration");
    path
}

/// The default machine of `cargo xtask qemu` (edu at slots 4 and 5), no tests selected,
/// with `modules` passed through `-initrd`.
fn demo_machine(iommu: Iommu, modules: &[PathBuf]) -> Machine {
    let mut m = Machine::new(&kernel(), iommu);
    m.edu = vec![Edu { slot: 4 }, Edu { slot: 5 }];
    if !modules.is_empty() {
        let list: Vec<String> = modules.iter().map(|p| p.display().to_string()).collect();
        m.extra = vec!["-initrd".into(), list.join(",")];
    }
    m
}

#[test]
fn partition_tests_pass_without_an_iommu() {
    let out = boot(&machine(Iommu::None, PARTITION_TESTS));
    assert_passed(&out);
    assert_logged(&out, "svm: enabled (nested paging");
    assert_logged(&out, "sits behind no IOMMU");
    // Destroyed partitions' frames went back dirty and were zeroed on reuse.
    assert_logged(&out, "4k: 2048 dirty frames handed out again, each zeroed first");
    assert_logged(&out, "2m: 2048 dirty frames handed out again, each zeroed first");
    // An interrupt whose delivery exited arrives once; without re-injection it is lost.
    assert_logged(&out, "partition redeliver (SVM): Done(0); handler ran 1 times, frame CS 0x8; demand page: 1 faults, 1 during an event's delivery");
    assert_logged(&out, "partition lose (SVM): Done(1); handler ran 0 times");
}

#[test]
fn partition_tests_pass_with_intel_iommu_tables() {
    let out = boot(&machine(
        intel(),
        "partition_guest_2m,partition_destroy_scrubs,partition_config,partition_guest_dma_4k",
    ));
    assert_passed(&out);
}

/// The device-assignment story lines `partition::story` prints for partitions `a`
/// (destroyed while `b` runs, then re-created) and `b`.
fn assert_story(out: &Outcome, a: &str, b: &str) {
    for p in [a, b] {
        assert_logged(out, &format!("partition {p}: stopped: Done(0)"));
        assert_logged(out, &format!("partition {p}: guest reports dma_own_matched = 0x800"));
        for check in ["outside", "foreign", "hypervisor"] {
            assert_logged(out, &format!("partition {p}: guest reports dma_{check}_nonzero = 0x0"));
        }
        assert_logged(out, &format!("partition {p}: DMA write to the other partition"));
        assert_logged(out, &format!("partition {p}: DMA write to hypervisor memory"));
        // Interrupt delivery: the guest programs its device's MSI through its trapped view
        // of the configuration space with vector 0x50, runs 3 DMAs that each ask for a
        // completion interrupt, and its handler takes exactly 3: its own device's, none of
        // the other partition's (whose device interrupts at another host vector).
        assert_logged(out, &format!("partition {p}: guest reports config_id = 0x11e81234"));
        assert_logged(out, &format!("partition {p}: guest reports irq_vector = 0x50"));
        assert_logged(out, &format!("partition {p}: guest reports irq_count = 0x3"));
    }
    // At destroy each partition says what arrived at its host vector: its own 3 (or
    // nothing, for a re-created guest that ran no DMA), all injected.
    let lines: Vec<&str> = out.log.lines().filter(|l| l.contains("device interrupts:")).collect();
    let own = "3 taken at the host vector, 3 injected, 0 dropped";
    assert!(lines.iter().filter(|l| l.ends_with(own)).count() >= 2, "{lines:#?}");
    for l in &lines {
        assert!(
            l.ends_with(own) || l.ends_with("0 taken at the host vector, 0 injected, 0 dropped"),
            "a partition got other than its own device interrupts: {l}"
        );
    }
    for l in out.log.lines().filter(|l| l.contains("bytes changed")) {
        assert!(l.ends_with(": 0 bytes changed"), "a forbidden DMA write landed: {l}");
    }
    assert_logged(out, &format!("partition {a}: destroyed while {b} runs:"));
    assert_logged(out, &format!("partition {b}: kept running: Done(0), 3 of 3 DMA rounds matched"));
    assert_logged(out, &format!("partition {a}: control: while attached, edu DMA from its device to guest-physical 0x1ff000 changed 2048 bytes"));
    assert_logged(out, &format!("partition {a}: after destroy its device"));
    assert_logged(out, "changed 0 bytes");
    assert_logged(out, &format!("partition {a}: re-created in the same memory"));
    assert_logged(out, &format!("partition {a}: re-created guest found Some(0) nonzero words"));
    assert_logged(out, &format!("partition {b}: destroyed:"));
}

/// Every destroy line's `N invalidations issued` and `N cycles`, for the report.
fn destroy_costs(out: &Outcome) -> Vec<String> {
    out.log
        .lines()
        .filter(|l| l.contains(": destroyed") && l.contains("invalidations issued"))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn default_configuration_tells_the_assignment_story_on_vtd() {
    let out = boot(&demo_machine(intel(), &[]));
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, "partitions: configuration from the built-in default");
    assert_logged(
        &out,
        "partition alpha: created, 64 MiB 2m-backed, nested leaves 256 x 4K + 32 x 2M",
    );
    assert_logged(
        &out,
        "partition beta: created, 32 MiB 4k-backed, nested leaves 8448 x 4K + 0 x 2M",
    );
    assert_logged(&out, "partition alpha: 0000:00:04.0 attached to IOMMU domain");
    assert_logged(&out, "partition beta: 0000:00:05.0 attached to IOMMU domain");
    assert_logged(&out, "partition alpha: guest reports pages_stamped = 0x3e00");
    assert_logged(&out, "partition beta: guest reports pages_stamped = 0x1e00");
    assert_story(&out, "alpha", "beta");
    // VT-d records every forbidden DMA (serviced after each guest hypercall), and the
    // destroyed partition's device finds no context entry.
    for p in ["alpha", "beta"] {
        assert_logged(&out, &format!("partition {p}: 5 DMA faults recorded for its device during the run (5 forbidden DMAs tried)"));
    }
    assert_logged(
        &out,
        // Reason 2: context entry not present (the device was detached at destroy).
        "story: DMA fault from requester 0x0020 at 0x1ff000 (write): reason 0x2",
    );
    assert_logged(
        &out,
        "edu DMA to its old guest-physical 0x1ff000 changed 0 bytes, 2 faults recorded",
    );
    assert_logged(&out, "partitions: the device-assignment story held");
    eprintln!("{}", destroy_costs(&out).join("\n"));
}

#[test]
fn default_configuration_tells_the_assignment_story_on_amdvi() {
    // intremap=on: assignment needs complete interrupt remapping, and only then does
    // QEMU's IVRS name the IOAPIC (the kernel refuses assignment otherwise).
    let out = boot(&demo_machine(Iommu::Amd { intremap: true }, &[]));
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_story(&out, "alpha", "beta");
    assert_logged(&out, "fgsp true");
    assert_logged(&out, "partitions: the device-assignment story held");
    eprintln!("{}", destroy_costs(&out).join("\n"));
}

/// The in-kernel story (2M- and 4K-backed partitions, each with its own edu), the
/// configuration checks, and the IOMMU fault service during an ordinary run, on a machine
/// with two edu devices.
fn assignment_story_machine(iommu: Iommu) -> Machine {
    let mut m = machine(
        iommu,
        // The fault service runs first (its place in the kernel's list): the console's
        // rate limiter still has room for its line.
        "iommu_fault_service,partition_assignment_story,partition_config,\
         partition_unassigned_blocked",
    );
    m.edu = vec![Edu { slot: 4 }, Edu { slot: 5 }];
    m
}

#[test]
fn assignment_story_in_kernel_through_vtd() {
    let out = boot(&assignment_story_machine(intel()));
    assert_passed(&out);
    assert_story(&out, "a", "b");
    assert_logged(&out, "partition a: destroyed while b runs: 8 MiB 2m-backed");
    assert_logged(&out, "partition b: destroyed: 8 MiB 4k-backed");
    assert_faults_serviced_during_the_run(&out);
}

/// A DMA fault during an ordinary partition run was drained and logged by the service,
/// with no call from the test; the control run without the service left it behind.
fn assert_faults_serviced_during_the_run(out: &Outcome) {
    assert_logged(out, "test iommu_fault_service ... ok");
    assert_logged(out, "records from 0x0020 left for a later caller");
    assert_logged(out, "fault service: control run without it:");
    // The service's own line, logged during the run (before the test's summary).
    let run = out.log.split("running test iommu_fault_service").nth(1).unwrap_or("");
    let run = run.split("fault service: during the run").next().unwrap_or("");
    assert!(
        run.lines().any(|l| l.contains("DMAR: [DMA ") && l.contains("Request device [00:04.0]")),
        "no fault line logged during the run: {run}"
    );
}

/// Caching mode: the unit may cache not-present entries, so attach must tell it about
/// the partition's mapping (and a 4-level table for aw-bits 48).
#[test]
fn assignment_story_in_kernel_through_vtd_caching_mode() {
    let out =
        boot(&assignment_story_machine(Iommu::Intel { aw_bits: Some(48), caching_mode: true }));
    assert_passed(&out);
    assert_story(&out, "a", "b");
}

#[test]
fn assignment_story_in_kernel_through_amdvi() {
    // intremap=on: assignment needs complete interrupt remapping, and only then does
    // QEMU's IVRS name the IOAPIC (the kernel refuses assignment otherwise).
    let out = boot(&assignment_story_machine(Iommu::Amd { intremap: true }));
    assert_passed(&out);
    assert_story(&out, "a", "b");
    // QEMU writes no AMD-Vi event for refused DMA: the interrupt path is what shows.
    assert_logged(&out, "event-log interrupt through 0000:00:");
    assert_logged(&out, "fault service: AMD-Vi interrupt through 0000:00:");
    assert_logged(&out, "fault service: control with the MSI disabled: 0 interrupts");
    assert_logged(&out, "no SMI filter registers (EFR.SmiFSup)");
}

/// The teardown benchmark's lines parse: six of them, each with its counts.
#[test]
fn partition_teardown_bench_prints_one_line_per_case() {
    let mut m = machine(intel(), "bench_partition_teardown");
    m.memory_mib = 3072;
    let out = boot(&m);
    assert_passed(&out);
    let lines: Vec<&str> =
        out.log.lines().filter(|l| l.starts_with("bench partition_teardown ")).collect();
    assert_eq!(lines.len(), 6, "{}", out.log);
    for l in &lines {
        for key in ["backing=", "strategy=", "invalidations=", "unmap_calls=", "cycles="] {
            assert!(l.contains(key), "`{key}` missing in {l}");
        }
    }
    let field = |l: &str, k: &str| -> u64 {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {l}"))
    };
    let four_k_pbp = lines
        .iter()
        .find(|l| l.contains("backing=4k strategy=page-by-page"))
        .expect("4k page-by-page");
    let four_k_default =
        lines.iter().find(|l| l.contains("backing=4k strategy=default")).expect("4k default");
    // Page by page flushes once per 4 KiB page of 1 GiB; the default flushes once.
    assert_eq!(field(four_k_pbp, "unmap_calls="), 262_144);
    assert!(field(four_k_default, "invalidations=") < 10, "{four_k_default}");
    eprintln!("{}", lines.join("\n"));
}

#[test]
fn configuration_module_with_a_guest_module_runs() {
    let guest = xtask::build::guest(false).expect("guest build");
    let cfg =
        config_file("module", "partition solo\n  memory 6M\n  backing 2m\n  image module:guest\n");
    let out = boot(&demo_machine(Iommu::None, &[cfg.clone(), guest]));
    let _ = std::fs::remove_file(&cfg);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, "configuration from the module partitions-");
    assert_logged(&out, "partition solo: created, 6 MiB 2m-backed");
    assert_logged(&out, "partition solo: guest reports pages_stamped = 0x400");
    assert_logged(&out, "partition solo: stopped: Done(0)");
    assert_logged(
        &out,
        "partition solo: runs its own image, so it is told no host-physical address",
    );
}

#[test]
fn configuration_asking_for_two_cpus_is_refused() {
    let cfg = config_file("cpus", "partition smp\n  memory 4M\n  cpus 2\n");
    let out = boot(&demo_machine(Iommu::None, std::slice::from_ref(&cfg)));
    let _ = std::fs::remove_file(&cfg);
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "line 3: 2 CPUs requested but a partition supports only 1 virtual CPU");
    assert!(!out.log.contains("created"), "a partition was created: {}", out.log);
}

#[test]
fn device_behind_no_iommu_is_refused_before_anything_starts() {
    // The default configuration assigns both edu devices; without an IOMMU neither may go.
    let out = boot(&demo_machine(Iommu::None, &[]));
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "device 0000:00:04.0 sits behind no IOMMU");
    assert_logged(&out, "device 0000:00:05.0 sits behind no IOMMU");
    assert!(!out.log.contains("created"), "a partition was created: {}", out.log);
}

#[test]
fn guest_dma_lands_in_its_own_memory_through_vtd() {
    let out = boot(&machine(intel(), "partition_guest_dma_4k,partition_guest_dma_2m"));
    assert_passed(&out);
}

#[test]
fn guest_dma_lands_in_its_own_memory_through_amdvi() {
    // intremap=on: assignment needs complete interrupt remapping, and only then does
    // QEMU's IVRS name the IOAPIC (the kernel refuses assignment otherwise).
    let out = boot(&machine(
        Iommu::Amd { intremap: true },
        "partition_guest_dma_4k,partition_guest_dma_2m",
    ));
    assert_passed(&out);
}

/// The default configuration on a VT-d unit that cannot remap interrupts is refused
/// before anything starts, with the reason. Two ways to be without remapping:
/// `intel-iommu,intremap=off` (ECAP.IR = 0; the IOMMU and the edu devices are given as
/// extra arguments so the IOMMU still comes first) and register-based invalidation (the
/// interrupt entry cache cannot be invalidated without the queue).
#[test]
fn assignment_without_interrupt_remapping_is_refused() {
    let mut off = demo_machine(Iommu::None, &[]);
    off.edu.clear();
    off.extra =
        ["-device", "intel-iommu,intremap=off"]
            .into_iter()
            .map(String::from)
            .chain([4, 5].iter().flat_map(|s| {
                ["-device".into(), format!("edu,addr={s:#x},dma_mask=0xffffffffffff")]
            }))
            .collect();
    let out = boot(&off);
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "interrupt remapping (IR): no");
    assert_logged(
        &out,
        "device 0000:00:04.0: IOMMU unit 0 cannot remap interrupts (the unit has no interrupt remapping (ECAP.IR))",
    );
    assert_logged(&out, "the unsafe switch allow-unsafe-interrupts would allow it");
    assert!(!out.log.contains("created"), "a partition was created: {}", out.log);

    let mut register = demo_machine(intel(), &[]);
    register.cmdline = "vtd-invalidation=register".into();
    let out = boot(&register);
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(
        &out,
        "device 0000:00:05.0: IOMMU unit 0 cannot remap interrupts (register-based invalidation",
    );
    assert!(!out.log.contains("created"), "a partition was created: {}", out.log);
}

/// With `allow-unsafe-interrupts` the same machine runs its partitions, and says loudly
/// that their interrupts are not isolated.
#[test]
fn unsafe_switch_allows_assignment_without_remapping_and_says_so() {
    let mut m = demo_machine(intel(), &[]);
    m.cmdline = "vtd-invalidation=register allow-unsafe-interrupts".into();
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, "UNSAFE: allow-unsafe-interrupts given: devices may be assigned through IOMMU units that do not remap interrupts (units [0])");
    assert_logged(&out, "UNSAFE: IOMMU unit 0 does not remap interrupts");
    assert_logged(&out, "partition alpha: created");
    assert_logged(&out, "partition beta: created");
}

#[test]
fn builtin_guest_is_refused_a_device_that_is_not_edu() {
    // q35's SATA controller (8086:2922 at 00:1f.2) is behind the IOMMU: only its
    // identity stops the built-in guest from being handed it.
    let cfg = config_file("notedu", "partition sata\n  memory 4M\n  device 00:1f.2\n");
    let out = boot(&demo_machine(intel(), std::slice::from_ref(&cfg)));
    let _ = std::fs::remove_file(&cfg);
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(
        &out,
        "device 0000:00:1f.2 is 8086:2922 (SATA controller), but the built-in guest drives only QEMU's edu device (1234:11e8)",
    );
    assert!(!out.log.contains("created"), "a partition was created: {}", out.log);
}
