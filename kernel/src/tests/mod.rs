//! In-kernel tests, run on the (emulated) machine by `test=NAME` on the command line.

mod core_tests;
pub mod dma;
mod edu_tests;
mod hostile_tests;
pub mod iommu;
mod nvme_tests;
mod partition_assign_tests;
mod partition_dma_tests;
mod partition_tests;
mod platform;
mod redelivery_tests;
mod scrub_tests;
mod vpid_tests;

use crate::testing::KernelTest;

/// Every in-kernel test, in the order `test=all` runs them.
pub static ALL: &[KernelTest] = &[
    KernelTest { name: "boot_info", run: core_tests::boot_info },
    KernelTest { name: "frames", run: core_tests::frames },
    KernelTest { name: "heap", run: core_tests::heap },
    KernelTest { name: "acpi", run: core_tests::acpi },
    KernelTest { name: "pci", run: core_tests::pci },
    KernelTest { name: "spurious_vector", run: core_tests::spurious_vector },
    KernelTest { name: "wait_without_timer", run: core_tests::wait_without_timer },
    KernelTest { name: "mmio_out_of_window", run: core_tests::mmio_out_of_window },
    KernelTest { name: "domain_ids", run: core_tests::domain_ids },
    KernelTest { name: "edu_dma_untranslated", run: edu_tests::untranslated_copy },
    KernelTest { name: "partition_guest_4k", run: partition_tests::guest_4k },
    KernelTest { name: "partition_guest_2m", run: partition_tests::guest_2m },
    KernelTest { name: "partition_vmmcall", run: partition_tests::vmmcall },
    KernelTest { name: "partition_hlt_exit", run: partition_tests::hlt_exit },
    KernelTest { name: "partition_shutdown_exit", run: partition_tests::shutdown_exit },
    KernelTest { name: "partition_runaway_budget", run: partition_tests::runaway_budget },
    KernelTest { name: "partition_destroy_scrubs", run: partition_tests::destroy_scrubs },
    KernelTest { name: "partition_device_bar", run: partition_tests::device_bar_passthrough },
    KernelTest { name: "partition_unmapped_access", run: partition_tests::unmapped_access_faults },
    KernelTest {
        name: "partition_builtin_refuses_non_edu",
        run: partition_tests::builtin_guest_refuses_other_devices,
    },
    KernelTest { name: "partition_bad_image", run: partition_tests::bad_image_refused },
    KernelTest { name: "partition_config", run: partition_tests::config_validation },
    KernelTest { name: "platform_pic", run: platform::devices::pic },
    KernelTest { name: "platform_pit", run: platform::devices::pit },
    KernelTest { name: "platform_lapic", run: platform::devices::lapic },
    KernelTest { name: "platform_devices", run: platform::devices::platform_and_hostile_input },
    KernelTest { name: "platform_decoder", run: platform::decoder::decoder },
    KernelTest { name: "platform_walk", run: platform::walk::walk },
    KernelTest { name: "platform_guest_timers", run: platform::guests::timers },
    KernelTest { name: "platform_guest_spinning", run: platform::guests::spinning },
    KernelTest { name: "platform_guest_masked", run: platform::guests::masked },
    KernelTest { name: "platform_guest_hostile", run: platform::guests::hostile },
    KernelTest { name: "platform_guest_absent", run: platform::guests::absent },
    KernelTest { name: "platform_guest_undecodable", run: platform::guests::undecodable },
    KernelTest { name: "partition_event_redelivery", run: redelivery_tests::redelivered },
    KernelTest { name: "partition_event_redelivery_control", run: redelivery_tests::control },
    KernelTest { name: "vmx_vpid_allocation", run: vpid_tests::vpids },
    KernelTest { name: "partition_guest_dma_4k", run: partition_dma_tests::guest_dma_4k },
    KernelTest { name: "partition_guest_dma_2m", run: partition_dma_tests::guest_dma_2m },
    // Before the story: the console's rate limiter still has room for its fault line.
    KernelTest { name: "iommu_fault_service", run: iommu::fault_service::background },
    KernelTest { name: "partition_assignment_story", run: partition_assign_tests::story },
    KernelTest {
        name: "partition_unassigned_blocked",
        run: partition_assign_tests::unassigned_blocked,
    },
    KernelTest { name: "bench_partition_teardown", run: partition_assign_tests::bench },
    KernelTest { name: "partition_destroy_defers_scrub", run: scrub_tests::destroy_defers_scrub },
    KernelTest { name: "bench_partition_destroy", run: scrub_tests::bench },
    KernelTest { name: "ir_forgery", run: iommu::interrupt_forgery::forgery },
    KernelTest { name: "ir_msi", run: iommu::msi_remap::msi },
    KernelTest { name: "ir_handoff", run: iommu::ir_handoff::handoff },
    KernelTest { name: "hostile_state_isolation", run: hostile_tests::state_isolation },
    KernelTest { name: "hostile_state_control", run: hostile_tests::state_control },
    KernelTest { name: "hostile_instructions", run: hostile_tests::instructions },
    KernelTest { name: "hostile_log_is_data", run: hostile_tests::log_is_data },
    KernelTest { name: "hostile_no_host_addresses", run: hostile_tests::no_host_addresses },
    KernelTest {
        name: "hostile_exception_loops_control",
        run: hostile_tests::exception_loops_control,
    },
    KernelTest { name: "hostile_device_reassignment", run: hostile_tests::device_reassignment },
    KernelTest { name: "hostile_flr_on_release", run: hostile_tests::flr_on_release },
    KernelTest { name: "hostile_switch_cost", run: hostile_tests::switch_cost },
    KernelTest { name: "nvme_identify_through_domain", run: nvme_tests::identify_through_domain },
    KernelTest { name: "nvme_quiesce_on_release", run: nvme_tests::quiesce_on_release },
    KernelTest { name: "ir_storm", run: iommu::ir_storm::storm },
    KernelTest { name: "iommu_translate_4k", run: iommu::translation::four_k },
    KernelTest { name: "iommu_translate_2m", run: iommu::translation::two_m },
    KernelTest { name: "iommu_translate_1g", run: iommu::translation::one_g },
    KernelTest { name: "iommu_invalidate_page", run: iommu::invalidation::page_selective },
    KernelTest { name: "iommu_invalidate_domain", run: iommu::invalidation::domain_selective },
    KernelTest { name: "iommu_invalidate_global", run: iommu::invalidation::global },
    KernelTest { name: "iommu_invalidate_control", run: iommu::invalidation::suppressed_control },
    KernelTest { name: "iommu_translate_8k", run: iommu::fine_grained::eight_k },
    KernelTest { name: "iommu_translate_64k", run: iommu::fine_grained::sixty_four_k },
    KernelTest { name: "iommu_translate_1m", run: iommu::fine_grained::one_m },
    KernelTest { name: "iommu_translate_4m", run: iommu::fine_grained::four_m },
    KernelTest { name: "iommu_isolation_unmapped", run: iommu::isolation::unmapped },
    KernelTest { name: "iommu_isolation_blocked", run: iommu::isolation::blocked },
    KernelTest { name: "iommu_reserved_identity", run: iommu::reserved::identity_domain },
    KernelTest { name: "iommu_fgsp_probe", run: iommu::fgsp::probe },
    KernelTest { name: "iommu_reattach", run: iommu::reattach::reattach },
    KernelTest { name: "iommu_teardown_contiguous", run: iommu::teardown::contiguous },
    KernelTest { name: "iommu_teardown_fragmented", run: iommu::teardown::fragmented },
    KernelTest { name: "iommu_teardown_control", run: iommu::teardown::control },
    KernelTest { name: "iommu_teardown_strategies", run: iommu::strategies::side_by_side },
    KernelTest { name: "vtd_isolation", run: iommu::vtd_faults::isolation },
    KernelTest { name: "vtd_no_context", run: iommu::vtd_faults::no_context },
    KernelTest { name: "vtd_fault_storm", run: iommu::vtd_faults::fault_storm },
    KernelTest { name: "vtd_takeover", run: iommu::vtd_takeover::takeover },
    KernelTest { name: "amdvi_takeover", run: iommu::amd_takeover::takeover },
    KernelTest { name: "bench_teardown", run: iommu::bench::bench_teardown },
];
