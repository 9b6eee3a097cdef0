//! Decoding a VMX exit (basic exit reason, qualification, interruption information,
//! instruction length, guest RIP, guest-physical address) into the vendor-neutral
//! [`VmExit`], or into what the backend must do first: the same [`Decoded`] the SVM
//! backend uses, so both backends follow one intercept policy (`intercept.rs`). Pure: no
//! VMCS access. Exit reasons are SDM vol. 3D, appendix C.

use super::super::svm_exit::Decoded;
use super::super::vcpu::VmExit;
use super::vmcs::event;

/// What a VM exit left in the VMCS, read by the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    /// EXIT_REASON (bit 31: VM-entry failure; bits 15:0 the basic reason).
    pub reason: u32,
    /// EXIT_QUALIFICATION.
    pub qualification: u64,
    /// VM-exit interruption information (exceptions, NMIs).
    pub interruption: u32,
    /// Its error code.
    pub error_code: u32,
    /// VM-exit instruction length.
    pub instruction_length: u32,
    /// Guest RIP.
    pub rip: u64,
    /// Guest-physical address (EPT violations and misconfigurations).
    pub gpa: u64,
}

// Basic exit reasons.
const EXCEPTION_OR_NMI: u32 = 0;
const EXTERNAL_INTERRUPT: u32 = 1;
const TRIPLE_FAULT: u32 = 2;
const INIT: u32 = 3;
const SIPI: u32 = 4;
const INTERRUPT_WINDOW: u32 = 7;
const TASK_SWITCH: u32 = 9;
const CPUID: u32 = 10;
const GETSEC: u32 = 11;
const HLT: u32 = 12;
const INVD: u32 = 13;
const RDPMC: u32 = 15;
const VMCALL: u32 = 18;
const VMCLEAR: u32 = 19;
const VMXON: u32 = 27;
const CR_ACCESS: u32 = 28;
const IO: u32 = 30;
const RDMSR: u32 = 31;
const WRMSR: u32 = 32;
const ENTRY_INVALID_GUEST_STATE: u32 = 33;
const ENTRY_MSR_LOADING: u32 = 34;
const MWAIT: u32 = 36;
const MONITOR: u32 = 39;
const ENTRY_MACHINE_CHECK: u32 = 41;
const EPT_VIOLATION: u32 = 48;
const EPT_MISCONFIG: u32 = 49;
const INVEPT: u32 = 50;
const INVVPID: u32 = 53;
const WBINVD: u32 = 54;
const PREEMPTION_TIMER: u32 = 52;
const XSETBV: u32 = 55;
const VMFUNC: u32 = 59;
/// EXIT_REASON bit 31: the VM entry failed.
const ENTRY_FAILURE: u32 = 1 << 31;

/// #MC.
const VECTOR_MC: u64 = 18;
/// #DB.
const VECTOR_DB: u64 = 1;

/// The hostile-guest policy's name for an exit the guest may not cause.
fn refused(instruction: &'static str, rip: u64) -> Decoded {
    Decoded::Exit(VmExit::Refused { instruction, rip })
}

/// Where the guest resumes after the instruction that caused exit `e`: its RIP plus the
/// VM-exit instruction length (the one place every VMX instruction skip comes from; the
/// guest's RIP wraps like the CPU's).
pub fn next_rip(e: &ExitInfo) -> u64 {
    e.rip.wrapping_add(u64::from(e.instruction_length))
}

/// Decodes one exit. Every value is accepted: unknown reasons become [`VmExit::Other`].
pub fn decode(e: &ExitInfo) -> Decoded {
    let rip = e.rip;
    let next_rip = next_rip(e);
    if e.reason & ENTRY_FAILURE != 0 {
        return Decoded::Exit(VmExit::InvalidState);
    }
    Decoded::Exit(match e.reason & 0xFFFF {
        IO => {
            let q = e.qualification;
            VmExit::Io {
                port: (q >> 16) as u16,
                size: ((q & 7) + 1) as u8,
                write: q & (1 << 3) == 0,
                string: q & (1 << 4 | 1 << 5) != 0,
                next_rip,
            }
        }
        VMCALL => VmExit::Hypercall { next_rip },
        HLT => VmExit::Halt,
        TRIPLE_FAULT => VmExit::Shutdown,
        // The slice ended (a host interrupt, the preemption timer) or the guest can now
        // take its pending virtual interrupt: the run loop decides whether to go on.
        EXTERNAL_INTERRUPT | INTERRUPT_WINDOW | PREEMPTION_TIMER => VmExit::HostInterrupt,
        RDMSR | WRMSR => VmExit::Msr { rip, write: e.reason & 0xFFFF == WRMSR },
        EPT_VIOLATION => {
            VmExit::NestedPageFault { gpa: e.gpa, error_code: npf_error_code(e.qualification), rip }
        }
        // A misconfigured entry has no qualification: reported as a fault on its page.
        EPT_MISCONFIG => VmExit::NestedPageFault { gpa: e.gpa, error_code: 0, rip },
        ENTRY_INVALID_GUEST_STATE | ENTRY_MSR_LOADING | ENTRY_MACHINE_CHECK => VmExit::InvalidState,
        CPUID => return Decoded::Cpuid,
        XSETBV => return Decoded::Xsetbv,
        WBINVD => return Decoded::CacheFlush { invd: false },
        INVD => return Decoded::CacheFlush { invd: true },
        RDPMC => return refused("RDPMC", rip),
        TASK_SWITCH => return refused("a task switch", rip),
        MONITOR => return refused("MONITOR", rip),
        MWAIT => return refused("MWAIT", rip),
        GETSEC => return refused("GETSEC", rip),
        VMCLEAR..=VMXON | INVEPT | INVVPID | VMFUNC => return refused("a VMX instruction", rip),
        // The only guest/host-masked CR bit is CR4.VMXE (see `VmxVcpu::enter_long_mode`).
        CR_ACCESS => return refused("a write to CR4.VMXE", rip),
        INIT | SIPI => return refused("an INIT or SIPI", rip),
        EXCEPTION_OR_NMI if event::VALID.is_set(u64::from(e.interruption)) => {
            let vector = event::VECTOR.get(u64::from(e.interruption));
            let kind = event::TYPE.get(u64::from(e.interruption));
            if kind == event::TYPE_NMI {
                VmExit::HostInterrupt
            } else if vector == VECTOR_MC {
                return Decoded::MachineCheck;
            } else if vector == VECTOR_DB && kind == event::TYPE_PRIV_SOFT_EXCEPTION {
                // A privileged software exception: ICEBP (INT1), CVE-2015-8104.
                return refused("ICEBP", rip);
            } else {
                VmExit::Exception { vector: vector as u8, error_code: u64::from(e.error_code), rip }
            }
        }
        code => VmExit::Other { code: u64::from(code), rip },
    })
}

/// An EPT violation's exit qualification (bit 0 read, 1 write, 2 instruction fetch, 3-5
/// the entry's permissions) in the shape `VmExit::NestedPageFault` carries on every
/// backend, the page-fault error code SVM reports: bit 0 present (some permission was
/// there), bit 1 write, bit 4 instruction fetch.
fn npf_error_code(qualification: u64) -> u64 {
    let present = u64::from(qualification & 0b11_1000 != 0);
    let write = u64::from(qualification & 1 << 1 != 0) << 1;
    let fetch = u64::from(qualification & 1 << 2 != 0) << 4;
    present | write | fetch
}
