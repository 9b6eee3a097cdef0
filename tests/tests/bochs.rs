//! Partitions under Bochs 2.7, the emulator with Intel VMX (EPT, VPID; unrestricted guest
//! on the newer models) and AMD SVM with nested paging (`ryzen`): the same in-kernel
//! partition and hostile-guest scenarios on two Intel models through the VMX backend and
//! on `ryzen` through the SVM backend, one boot per model (xtask/src/bochs.rs, docs/bochs.md).
//!
//! Machine properties relied on, each checked from the log: the kernel picks the backend
//! from CPUID and says which (`partition: vCPU backend VMX|SVM`); the VMX models report
//! EPT with 2 MiB pages, and corei7_skylake_x has unrestricted guest where
//! corei5_lynnfield_750 has none (the backend needs none: guests start in long mode).
//! Bochs has no PCIe, no IOMMU and no edu device: the scenarios that need a device stay
//! on QEMU. `cargo xtask test` installs Bochs as it installs QEMU (`.ci/run` too); run alone, a
//! missing `bochs` fails the suite with the
//! packages to install.

use std::time::Duration;
use tests::*;
use xtask::bochs::BochsMachine;

/// Every device-free scenario all three models pass: guest runs (4K, 2M), the CPU's own
/// hypercall instruction, HLT, destroy and re-create on scrubbed memory, an access
/// outside the nested mappings (EPT/NPT violation), refused images, and the
/// hostile-guest scenarios without a device that need no XSAVE.
const COMMON: &str = "partition_guest_4k,partition_guest_2m,partition_vmmcall,partition_hlt_exit,\
partition_destroy_scrubs,partition_unmapped_access,partition_bad_image,hostile_instructions,\
hostile_log_is_data,hostile_no_host_addresses";

/// VMX on every model: a triple fault exits (reason 2), the runaway guest is stopped by
/// the budget, and so is the control run of the #DB/#AC exception loops (which only the
/// host's timer ends); an interrupt whose delivery exits (EPT violation on its stack) is
/// re-injected from the IDT-vectoring information and arrives once, and its control
/// (re-injection off) loses it.
const VMX: &str =
    "partition_shutdown_exit,partition_runaway_budget,hostile_exception_loops_control,\
partition_event_redelivery,partition_event_redelivery_control,vmx_vpid_allocation";

fn bochs(cpu: &str, tests: &str) -> Outcome {
    let mut m = BochsMachine::new(&kernel(), cpu);
    m.cmdline = format!("test={tests}");
    // About a minute and a half each on an idle machine; ten on a loaded one.
    m.timeout = Duration::from_secs(900);
    boot_bochs(&m)
}

fn vmx_model(cpu: &str, unrestricted: &str, more: &str) -> Outcome {
    let out = bochs(cpu, &format!("{COMMON},{VMX}{more}"));
    assert_passed(&out);
    assert_logged(&out, "partition: vCPU backend VMX (chosen from CPUID)");
    assert_logged(&out, "vmx: enabled (VMCS revision");
    assert_logged(&out, &format!("unrestricted guest {unrestricted}"));
    // PCI through ports 0xCF8/0xCFC (no MCFG): the i440FX host bridge is found.
    assert_logged(&out, "pci: 0000:00:00.0 8086:1237");
    assert_logged(&out, "partition redeliver (VMX): Done(0); handler ran 1 times, frame CS 0x8; demand page: 1 faults, 1 during an event's delivery");
    assert_logged(&out, "partition lose (VMX): Done(1); handler ran 0 times");
    out
}

/// Skylake-X has XSAVE (AVX-512, PKRU): the hostile guests' extended-state isolation.
#[test]
fn bochs_vmx_skylake() {
    vmx_model("corei7_skylake_x", "available", ",hostile_state_isolation");
}

/// Nehalem (Lynnfield): VMX with EPT and VPID, no unrestricted guest, and no XSAVE (the
/// world switch falls back to FXSAVE: logged, and checked here); the extended-state
/// hostile scenario needs XSAVE and stays on Skylake-X and QEMU.
#[test]
fn bochs_vmx_lynnfield_without_unrestricted_guest() {
    let out = vmx_model("corei5_lynnfield_750", "absent", "");
    assert_logged(&out, "world switch: no XSAVE: x87/SSE switched in 512-byte FXSAVE areas");
}

/// The same scenarios through SVM on Bochs' AMD model, with the extended-state isolation
/// and its world-switch control (vmsave/vmload is SVM's; under VMX the hardware switches
/// segments by construction). Three scenarios are left to QEMU, for Bochs 2.7 faults
/// (docs/bochs.md): the triple fault (Bochs dies at its "3rd exception" before checking
/// the SVM SHUTDOWN intercept), and the runaway guest and the exception-loop control,
/// which only the host's timer can end (Bochs never exits for it from an SVM guest
/// entered with RFLAGS.IF = 0).
#[test]
fn bochs_svm_ryzen() {
    let out = bochs("ryzen", &format!("{COMMON},hostile_state_isolation,hostile_state_control"));
    assert_passed(&out);
    assert_logged(&out, "partition: vCPU backend SVM (chosen from CPUID)");
    assert_logged(&out, "svm: enabled (nested paging");
}

/// The control: a run whose hypervisor fails (a deliberate page fault) is judged a
/// failure from its serial closing line and Bochs' shutdown message.
#[test]
fn bochs_failure_is_reported() {
    let mut m = BochsMachine::new(&kernel(), "corei7_skylake_x");
    m.cmdline = "fault=pagefault".into();
    let out = boot_bochs(&m);
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "EXCEPTION: Page fault (#PF), vector 14");
}
