//! Decoding an SVM #VMEXIT (exit code, EXITINFO1/2, guest RIP) into the vendor-neutral
//! [`VmExit`], or into what the backend must do first (emulate, flush, hand a machine
//! check to the host). Pure: no VMCB access, so it is fuzzed with arbitrary register
//! values (`boot/fuzz`, target `vm_exit`). The exit codes are AMD APM vol. 2, appendix C.
#![deny(unsafe_code)]

use super::vcpu::VmExit;

// Exit codes.
const EXIT_EXCEPTION_0: u64 = 0x40;
const EXIT_INTR: u64 = 0x60;
const EXIT_NMI: u64 = 0x61;
const EXIT_RDPMC: u64 = 0x6F;
const EXIT_CPUID: u64 = 0x72;
const EXIT_INVD: u64 = 0x76;
const EXIT_HLT: u64 = 0x78;
const EXIT_INVLPGA: u64 = 0x7A;
const EXIT_IOIO: u64 = 0x7B;
const EXIT_MSR: u64 = 0x7C;
const EXIT_TASK_SWITCH: u64 = 0x7D;
const EXIT_SHUTDOWN: u64 = 0x7F;
const EXIT_VMMCALL: u64 = 0x81;
const EXIT_ICEBP: u64 = 0x88;
const EXIT_WBINVD: u64 = 0x89;
const EXIT_MONITOR: u64 = 0x8A;
const EXIT_MWAIT: u64 = 0x8B;
const EXIT_MWAIT_CONDITIONAL: u64 = 0x8C;
const EXIT_XSETBV: u64 = 0x8D;
const EXIT_RDPRU: u64 = 0x8E;
const EXIT_NPF: u64 = 0x400;
const EXIT_INVALID: u64 = u64::MAX;
/// #MC.
const VECTOR_MC: u64 = 18;

/// What an exit asks of the SVM backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// Nothing to do: hand this to the run loop.
    Exit(VmExit),
    /// CPUID, to emulate (filtered: `intercept::guest_cpuid`).
    Cpuid,
    /// XSETBV, to validate and emulate.
    Xsetbv,
    /// WBINVD (or INVD, `invd`), to perform as a host WBINVD.
    CacheFlush {
        /// The guest executed INVD.
        invd: bool,
    },
    /// A machine check while the guest ran, for the host's handler.
    MachineCheck,
}

/// The length of the instruction an exit `code` names, for a CPU without NRIP save
/// (QEMU's TCG): the instructions' fixed encodings (HLT F4; RDMSR 0F 32, WRMSR 0F 30,
/// CPUID 0F A2, WBINVD 0F 09, INVD 0F 08; VMMCALL 0F 01 D9, XSETBV 0F 01 D1). A guest
/// could put prefixes before them, which this does not see: one more reason to prefer
/// the hardware's NRIP where the CPU saves it. 0 for exits that name no instruction.
pub fn fixed_length(code: u64) -> u64 {
    match code {
        EXIT_HLT => 1,
        EXIT_MSR | EXIT_CPUID | EXIT_WBINVD | EXIT_INVD => 2,
        EXIT_VMMCALL | EXIT_XSETBV => 3,
        _ => 0,
    }
}

/// Where the guest resumes after the instruction exit `code` names, the one place every
/// instruction skip comes from: an I/O exit's EXITINFO2 (always the next RIP), else the
/// CPU's NRIP (`nrip`, when it has NRIP save: CPUID 0x8000_000A EDX bit 3), else RIP
/// plus [`fixed_length`]. The guest's RIP is guest-controlled: it wraps like the CPU's.
pub fn next_rip(code: u64, rip: u64, info2: u64, nrip: Option<u64>) -> u64 {
    match (code, nrip) {
        (EXIT_IOIO, _) => info2,
        (_, Some(n)) if fixed_length(code) != 0 => n,
        _ => rip.wrapping_add(fixed_length(code)),
    }
}

/// Decodes exit `code` with its EXITINFO1/2, the guest's RIP and the RIP after the
/// instruction ([`next_rip`]). Every value is accepted (the hardware's, or a fuzzer's):
/// unknown codes become [`VmExit::Other`].
pub fn decode(code: u64, info1: u64, info2: u64, rip: u64, next_rip: u64) -> Decoded {
    let refused = |instruction| Decoded::Exit(VmExit::Refused { instruction, rip });
    Decoded::Exit(match code {
        EXIT_IOIO => VmExit::Io {
            port: (info1 >> 16) as u16,
            size: ((info1 >> 4) & 7) as u8,
            write: info1 & 1 == 0,
            string: info1 & (1 << 2 | 1 << 3) != 0,
            next_rip,
        },
        EXIT_VMMCALL => VmExit::Hypercall { next_rip },
        EXIT_HLT => VmExit::Halt,
        EXIT_SHUTDOWN => VmExit::Shutdown,
        EXIT_INTR | EXIT_NMI => VmExit::HostInterrupt,
        // EXITINFO1: 0 for RDMSR, 1 for WRMSR.
        EXIT_MSR => VmExit::Msr { rip, write: info1 & 1 != 0 },
        EXIT_NPF => VmExit::NestedPageFault { gpa: info2, error_code: info1, rip },
        EXIT_INVALID => VmExit::InvalidState,
        EXIT_CPUID => return Decoded::Cpuid,
        EXIT_XSETBV => return Decoded::Xsetbv,
        EXIT_WBINVD => return Decoded::CacheFlush { invd: false },
        EXIT_INVD => return Decoded::CacheFlush { invd: true },
        EXIT_RDPMC => return refused("RDPMC"),
        EXIT_RDPRU => return refused("RDPRU"),
        EXIT_INVLPGA => return refused("INVLPGA"),
        EXIT_TASK_SWITCH => return refused("a task switch"),
        EXIT_ICEBP => return refused("ICEBP"),
        EXIT_MONITOR => return refused("MONITOR"),
        EXIT_MWAIT | EXIT_MWAIT_CONDITIONAL => return refused("MWAIT"),
        c if c == EXIT_EXCEPTION_0 + VECTOR_MC => return Decoded::MachineCheck,
        c if (EXIT_EXCEPTION_0..EXIT_EXCEPTION_0 + 32).contains(&c) => {
            VmExit::Exception { vector: (c - EXIT_EXCEPTION_0) as u8, error_code: info1, rip }
        }
        _ => VmExit::Other { code, rip },
    })
}
