//! Guest partitions under SVM with nested paging (QEMU TCG, `-cpu max`): the in-kernel
//! partition tests, the default two-partition boot, and configurations passed as boot
//! modules (QEMU `-initrd` with Multiboot1), including refused ones.

use std::path::PathBuf;
use tests::*;

const PARTITION_TESTS: &str = "partition_guest_4k,partition_guest_2m,partition_vmmcall,\
partition_hlt_exit,partition_shutdown_exit,partition_runaway_budget,partition_destroy_scrubs,\
partition_device_bar,partition_unmapped_access,partition_bad_image,partition_config";

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
}

#[test]
fn partition_tests_pass_with_intel_iommu_tables() {
    let out =
        boot(&machine(intel(), "partition_guest_2m,partition_destroy_scrubs,partition_config"));
    assert_passed(&out);
}

#[test]
fn default_configuration_runs_two_partitions() {
    let out = boot(&demo_machine(intel(), &[]));
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(&out, "partitions: configuration from the built-in default");
    assert_logged(
        &out,
        "partition alpha: created, 64 MiB 2m-backed, nested leaves 0 x 4K + 32 x 2M",
    );
    assert_logged(
        &out,
        "partition beta: created, 32 MiB 4k-backed, nested leaves 8192 x 4K + 0 x 2M",
    );
    assert_logged(&out, "partition alpha: guest reports nonzero_words = 0x0");
    assert_logged(&out, "partition alpha: guest reports pages_stamped = 0x3e00");
    assert_logged(&out, "partition beta: guest reports pages_stamped = 0x1e00");
    assert_logged(&out, "partition alpha: stopped: Done(0)");
    assert_logged(&out, "partition beta: stopped: Done(0)");
    assert_logged(&out, "partition alpha: destroyed, 64 MiB scrubbed");
    assert_logged(&out, "partition beta: destroyed, 32 MiB scrubbed");
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
    let out = boot(&machine(
        Iommu::Amd { intremap: false },
        "partition_guest_dma_4k,partition_guest_dma_2m",
    ));
    assert_passed(&out);
}
