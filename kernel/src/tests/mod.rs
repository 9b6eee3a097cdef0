//! In-kernel tests, run on the (emulated) machine by `test=NAME` on the command line.

mod core_tests;
pub mod dma;
mod edu_tests;
pub mod iommu;

use crate::testing::KernelTest;

/// Every in-kernel test, in the order `test=all` runs them.
pub static ALL: &[KernelTest] = &[
    KernelTest { name: "boot_info", run: core_tests::boot_info },
    KernelTest { name: "frames", run: core_tests::frames },
    KernelTest { name: "heap", run: core_tests::heap },
    KernelTest { name: "acpi", run: core_tests::acpi },
    KernelTest { name: "pci", run: core_tests::pci },
    KernelTest { name: "edu_dma_untranslated", run: edu_tests::untranslated_copy },
    KernelTest { name: "iommu_translate_4k", run: iommu::translation::four_k },
    KernelTest { name: "iommu_translate_2m", run: iommu::translation::two_m },
    KernelTest { name: "iommu_translate_1g", run: iommu::translation::one_g },
    KernelTest { name: "iommu_invalidate_page", run: iommu::invalidation::page_selective },
    KernelTest { name: "iommu_invalidate_domain", run: iommu::invalidation::domain_selective },
    KernelTest { name: "iommu_invalidate_global", run: iommu::invalidation::global },
    KernelTest { name: "iommu_invalidate_control", run: iommu::invalidation::suppressed_control },
    KernelTest { name: "iommu_reattach", run: iommu::reattach::reattach },
    KernelTest { name: "iommu_teardown_contiguous", run: iommu::teardown::contiguous },
    KernelTest { name: "iommu_teardown_fragmented", run: iommu::teardown::fragmented },
    KernelTest { name: "iommu_teardown_control", run: iommu::teardown::control },
    KernelTest { name: "vtd_isolation", run: iommu::vtd_faults::isolation },
    KernelTest { name: "vtd_no_context", run: iommu::vtd_faults::no_context },
    KernelTest { name: "vtd_fault_storm", run: iommu::vtd_faults::fault_storm },
    KernelTest { name: "bench_teardown", run: iommu::bench::bench_teardown },
];
