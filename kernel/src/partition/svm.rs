//! AMD SVM: enabling it on the host (EFER.SVME, the host save area), the VMCB, the I/O
//! and MSR permission maps, `clgi; vmrun; stgi`, and exit decoding into [`VmExit`].
//!
//! Under QEMU TCG there is no NRIP save: the next RIP of an I/O exit is EXITINFO2, and
//! skipped VMMCALL/HLT instructions are advanced by their length.

use super::svm_exit::{self, Decoded};
use super::vcpu::{EntryState, GuestControl, Reg, VcpuBackend, VmExit};
use super::world::GuestWorld;
use super::{intercept, world};
use crate::mem::frames;
use core::fmt;
use x86_64::registers::model_specific::Msr;

const MSR_EFER: u32 = 0xC000_0080;
const EFER_SVME: u64 = 1 << 12;
const MSR_VM_CR: u32 = 0xC001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;

/// Control-area offsets (AMD APM vol. 2, appendix B).
mod ctl {
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    pub const INTERCEPT_MISC1: usize = 0x00C;
    pub const INTERCEPT_MISC2: usize = 0x010;
    pub const IOPM_BASE: usize = 0x040;
    pub const MSRPM_BASE: usize = 0x048;
    pub const ASID: usize = 0x058;
    pub const TLB_CONTROL: usize = 0x05C;
    pub const VINTR: usize = 0x060;
    pub const INTERRUPT_SHADOW: usize = 0x068;
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const EXIT_INT_INFO: usize = 0x088;
    pub const EVENT_INJ: usize = 0x0A8;
    pub const NP_ENABLE: usize = 0x090;
    pub const N_CR3: usize = 0x0B0;
}

/// State-save-area offsets.
mod save {
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const FS: usize = 0x440;
    pub const GS: usize = 0x450;
    pub const GDTR: usize = 0x460;
    pub const LDTR: usize = 0x470;
    pub const IDTR: usize = 0x480;
    pub const TR: usize = 0x490;
    pub const CPL: usize = 0x4CB;
    pub const EFER: usize = 0x4D0;
    pub const CR4: usize = 0x548;
    pub const CR3: usize = 0x550;
    pub const CR0: usize = 0x558;
    pub const DR7: usize = 0x560;
    pub const DR6: usize = 0x568;
    pub const RFLAGS: usize = 0x570;
    pub const RIP: usize = 0x578;
    pub const RSP: usize = 0x5D8;
    pub const RAX: usize = 0x5F8;
    pub const STAR: usize = 0x600;
    pub const LSTAR: usize = 0x608;
    pub const CSTAR: usize = 0x610;
    pub const SFMASK: usize = 0x618;
    pub const KERNEL_GS_BASE: usize = 0x620;
    pub const SYSENTER_CS: usize = 0x628;
    pub const SYSENTER_ESP: usize = 0x630;
    pub const SYSENTER_EIP: usize = 0x638;
    pub const G_PAT: usize = 0x668;
}

/// The 8-byte words VMSAVE stores and VMLOAD loads (FS, GS, LDTR, TR with their hidden
/// parts; KERNEL_GS_BASE; the SYSCALL and SYSENTER MSRs): the part of the world switch
/// that `world` does with those two instructions.
pub const VMSAVE_FIELDS: [usize; 16] = [
    save::FS,
    save::FS + 8,
    save::GS,
    save::GS + 8,
    save::LDTR,
    save::LDTR + 8,
    save::TR,
    save::TR + 8,
    save::STAR,
    save::LSTAR,
    save::CSTAR,
    save::SFMASK,
    save::KERNEL_GS_BASE,
    save::SYSENTER_CS,
    save::SYSENTER_ESP,
    save::SYSENTER_EIP,
];

/// VINTR (offset 0x060): a virtual interrupt is requested (cleared when the guest takes it).
const V_IRQ: iommu::bits::Field = iommu::bits::Field::bit(8);
/// VINTR: its priority (compared with V_TPR unless V_IGN_TPR).
const V_INTR_PRIO: iommu::bits::Field = iommu::bits::Field::new(16, 4);
/// VINTR: ignore the virtual TPR.
const V_IGN_TPR: iommu::bits::Field = iommu::bits::Field::bit(20);
/// VINTR: the virtual interrupt's vector.
const V_INTR_VECTOR: iommu::bits::Field = iommu::bits::Field::new(32, 8);

// Intercept bits, vector 3 (offset 0x00C) and vector 4 (0x010). The policy behind each
// is in `intercept.rs`; the reason is given here once per bit.
/// Host interrupts end the guest's slice (the host timer bounds every run).
const INTERCEPT_INTR: u32 = 1 << 0;
/// NMIs are the host's.
const INTERCEPT_NMI: u32 = 1 << 1;
/// RDPMC: the performance counters are the host's; refused.
const INTERCEPT_RDPMC: u32 = 1 << 15;
/// CPUID: emulated with a filtered view (no SVM, no PMU, no MONITOR, ...).
const INTERCEPT_CPUID: u32 = 1 << 18;
/// INVD: never executed (it would drop the host's dirty cache lines); emulated as WBINVD.
const INTERCEPT_INVD: u32 = 1 << 22;
/// HLT: the guest is done with the CPU (the run ends), or, with the guest platform and
/// interrupts on, waits for its next virtual interrupt.
const INTERCEPT_HLT: u32 = 1 << 24;
/// INVLPGA: an SVM instruction reaching other ASIDs' TLB entries; refused.
const INTERCEPT_INVLPGA: u32 = 1 << 26;
/// I/O: only the hypercall port is served.
const INTERCEPT_IOIO: u32 = 1 << 27;
/// MSRs: none is emulated; any access stops the guest.
const INTERCEPT_MSR: u32 = 1 << 28;
/// Task switches: long mode has none; refused.
const INTERCEPT_TASK_SWITCH: u32 = 1 << 29;
/// Triple faults end the run instead of resetting the host.
const INTERCEPT_SHUTDOWN: u32 = 1 << 31;
/// VMRUN, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT: the guest uses none of SVM.
const INTERCEPT_SVM_INSTRUCTIONS: u32 = 0x7F;
/// ICEBP (INT1): a #DB the exception intercept does not see (CVE-2015-8104); refused.
const INTERCEPT_ICEBP: u32 = 1 << 8;
/// WBINVD: executed by the host on the guest's behalf (emulated).
const INTERCEPT_WBINVD: u32 = 1 << 9;
/// MONITOR, MWAIT, MWAIT when armed: CPUID says there is none; refused.
const INTERCEPT_MONITOR_MWAIT: u32 = 1 << 10 | 1 << 11 | 1 << 12;
/// XSETBV: XCR0 is host state; only values `intercept::xcr0_allowed` accepts are loaded.
const INTERCEPT_XSETBV: u32 = 1 << 13;
/// RDPRU: the host's processor registers; refused.
const INTERCEPT_RDPRU: u32 = 1 << 14;
// RDTSC (vector 3 bit 14) and RDTSCP (vector 4 bit 7) are deliberately not intercepted:
// see `intercept.rs`.

/// Exceptions intercepted by default: every vector (the guest has no IDT of its own).
pub const ALL_EXCEPTIONS: u32 = u32::MAX;
/// Exceptions intercepted whatever a caller asks: #DB (1) and #AC (17), whose
/// delivery loops (CVE-2015-8104, CVE-2015-5307) would hang the host, and #MC (18),
/// which is the host's.
pub const ALWAYS_INTERCEPTED: u32 = 1 << 1 | 1 << 17 | 1 << 18;

/// Off only in the hostile suite's control runs ([`force_intercepts_for_test`]); only in
/// builds with the kernel's `test-controls` feature, never in `--release`.
#[cfg(feature = "test-controls")]
static FORCE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Test-only knob (`test-controls` builds only): with `false`, [`ALWAYS_INTERCEPTED`] is
/// no longer added to what `set_exception_intercepts` asks, so the hostile suite's control
/// can show a guest taking its own #DB/#AC.
#[cfg(feature = "test-controls")]
pub fn force_intercepts_for_test(on: bool) {
    FORCE.store(on, core::sync::atomic::Ordering::SeqCst);
}

/// Whether [`ALWAYS_INTERCEPTED`] is forced: off only in a `test-controls` build's control.
#[cfg(feature = "test-controls")]
fn intercepts_forced() -> bool {
    FORCE.load(core::sync::atomic::Ordering::SeqCst)
}

/// Whether [`ALWAYS_INTERCEPTED`] is forced: always, in a build without the test controls.
#[cfg(not(feature = "test-controls"))]
fn intercepts_forced() -> bool {
    true
}

/// What `set_exception_intercepts` adds to what it is asked (both backends):
/// [`ALWAYS_INTERCEPTED`], unless a `test-controls` build's control turned it off.
pub fn forced_exceptions() -> u32 {
    if intercepts_forced() {
        ALWAYS_INTERCEPTED
    } else {
        0
    }
}

/// Why SVM cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SvmError {
    /// CPUID reports no SVM (an Intel machine needs the VMX backend).
    NotSupported,
    /// The firmware disabled SVM (VM_CR.SVMDIS).
    DisabledByFirmware,
    /// CPUID reports no nested paging.
    NoNestedPaging,
    /// No frame for the host save area, a VMCB or a permission map.
    OutOfFrames,
    /// CPUID reports neither XSAVE nor FXSAVE, which the world switch needs.
    NoXsave,
}

impl fmt::Display for SvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SvmError::NotSupported => "the CPU has no AMD SVM (use -cpu max under QEMU)",
            SvmError::DisabledByFirmware => "SVM is disabled by the firmware (VM_CR.SVMDIS)",
            SvmError::NoNestedPaging => "the CPU has SVM but no nested paging",
            SvmError::OutOfFrames => "out of frames for SVM structures",
            SvmError::NoXsave => {
                "the CPU has neither XSAVE nor FXSAVE, which the world switch needs"
            }
        })
    }
}

static ENABLED: spin::Once<Result<(), SvmError>> = spin::Once::new();

fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid(leaf)
}

/// Checks for SVM with nested paging and enables it on this (the boot) CPU once: sets
/// EFER.SVME, points VM_HSAVE_PA at a fresh host save area, and sets up the world
/// switch's host side (`world::host_facts`: XSAVE is required).
pub fn enable() -> Result<(), SvmError> {
    *ENABLED.call_once(|| {
        if cpuid(0x8000_0000).eax < 0x8000_000A || cpuid(0x8000_0001).ecx & (1 << 2) == 0 {
            return Err(SvmError::NotSupported);
        }
        // SAFETY: VM_CR exists on every processor that reports SVM; reading it has no effect.
        if unsafe { Msr::new(MSR_VM_CR).read() } & VM_CR_SVMDIS != 0 {
            return Err(SvmError::DisabledByFirmware);
        }
        if cpuid(0x8000_000A).edx & 1 == 0 {
            return Err(SvmError::NoNestedPaging);
        }
        let hsave = frames::alloc_zeroed().ok_or(SvmError::OutOfFrames)?;
        // SAFETY: setting EFER.SVME only makes the SVM instructions available (SVM was
        // checked above); VM_HSAVE_PA gets a page this code owns for the rest of the run
        // (the processor stores host state there on VMRUN).
        unsafe {
            let mut efer = Msr::new(MSR_EFER);
            efer.write(efer.read() | EFER_SVME);
            Msr::new(MSR_VM_HSAVE_PA).write(hsave);
        }
        world::host_facts()?;
        log::info!("svm: enabled (nested paging, {} ASIDs)", cpuid(0x8000_000A).ebx);
        Ok(())
    })
}

/// Guest general-purpose registers VMRUN does not keep in the VMCB; the layout is what
/// `partition_svm_vmrun` below expects.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct GuestGprs {
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rbp: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
}

// Saves the host's callee-saved registers; with GIF clear, `vmsave`s the host's FS/GS/
// TR/LDTR/SYSCALL MSRs into the page at RDX (skipped when RDX = 0: the switch's test
// knob) and `vmload`s the guest's from its VMCB (RDI), loads the guest's registers from
// `GuestGprs` (RSI), `vmrun`s, stores the guest's registers back, `vmsave`s the guest's
// state into its VMCB and `vmload`s the host's, disables every breakpoint (DR7 = 0x400),
// sets GIF and restores the host's registers. A pending host interrupt is taken right
// after `stgi`, never on guest TR.
core::arch::global_asm!(
    ".global partition_svm_vmrun",
    "partition_svm_vmrun:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "push rdx",
    "push rsi",
    "clgi",
    "test rdx, rdx",
    "jz 2f",
    "mov rax, rdx",
    "vmsave rax",
    "mov rax, rdi",
    "vmload rax",
    "2:",
    "mov rax, rdi",
    "mov rbx, [rsi + 0x00]",
    "mov rcx, [rsi + 0x08]",
    "mov rdx, [rsi + 0x10]",
    "mov rdi, [rsi + 0x20]",
    "mov rbp, [rsi + 0x28]",
    "mov r8, [rsi + 0x30]",
    "mov r9, [rsi + 0x38]",
    "mov r10, [rsi + 0x40]",
    "mov r11, [rsi + 0x48]",
    "mov r12, [rsi + 0x50]",
    "mov r13, [rsi + 0x58]",
    "mov r14, [rsi + 0x60]",
    "mov r15, [rsi + 0x68]",
    "mov rsi, [rsi + 0x18]",
    "clgi",
    "vmrun rax",
    "push rsi",
    "mov rsi, [rsp + 8]",
    "mov [rsi + 0x00], rbx",
    "mov [rsi + 0x08], rcx",
    "mov [rsi + 0x10], rdx",
    "mov [rsi + 0x20], rdi",
    "mov [rsi + 0x28], rbp",
    "mov [rsi + 0x30], r8",
    "mov [rsi + 0x38], r9",
    "mov [rsi + 0x40], r10",
    "mov [rsi + 0x48], r11",
    "mov [rsi + 0x50], r12",
    "mov [rsi + 0x58], r13",
    "mov [rsi + 0x60], r14",
    "mov [rsi + 0x68], r15",
    "pop rax",
    "mov [rsi + 0x18], rax",
    "add rsp, 8",
    "pop rdx",
    "pop rdi",
    "test rdx, rdx",
    "jz 3f",
    "mov rax, rdi",
    "vmsave rax",
    "mov rax, rdx",
    "vmload rax",
    "3:",
    // No guest breakpoint (DR0-DR3 are still the guest's) may fire in host code before
    // `world` restores the host's debug registers: disable them all before GIF is set.
    "mov eax, 0x400",
    "mov dr7, rax",
    "stgi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
);

unsafe extern "C" {
    fn partition_svm_vmrun(vmcb: u64, gprs: *mut GuestGprs, host_save: u64);
}

/// An SVM virtual CPU: its VMCB, I/O permission map (12 KiB, every port intercepted),
/// MSR permission map (8 KiB, every MSR intercepted) and the registers VMRUN leaves to
/// software.
pub struct SvmVcpu {
    vmcb: u64,
    iopm: u64,
    msrpm: u64,
    gprs: GuestGprs,
    /// What VMRUN does not switch: XSAVE state, XCR0, DR0-DR3.
    world: GuestWorld,
}

/// A 12-bit VMCB segment attribute: 64-bit code (type 0xB, S, P, L, G).
const CODE64: u16 = 0xA9B;
/// Flat data (type 3, S, P, D/B, G).
const DATA: u16 = 0xC93;
/// A present busy 64-bit TSS (type 0xB, P): the guest's TR at start.
const TSS64_BUSY: u16 = 0x08B;
/// A present LDT (type 2, P): the guest's LDTR at start.
const LDT: u16 = 0x082;

impl SvmVcpu {
    /// A vCPU for a guest whose nested tables are rooted at `nested_cr3`, with
    /// address-space id `asid` (nonzero).
    pub fn new(nested_cr3: u64, asid: u32) -> Result<SvmVcpu, SvmError> {
        enable()?;
        let world = GuestWorld::new()?;
        let vmcb = frames::alloc_zeroed().ok_or(SvmError::OutOfFrames)?;
        let Some(iopm) = frames::alloc_contiguous(3, 4096) else {
            frames::free(vmcb);
            return Err(SvmError::OutOfFrames);
        };
        let Some(msrpm) = frames::alloc_contiguous(2, 4096) else {
            frames::free(vmcb);
            frames::free_contiguous(iopm, 3);
            return Err(SvmError::OutOfFrames);
        };
        // SAFETY: both maps are fresh frames this vCPU owns, identity-mapped; all ones
        // intercepts every port and every MSR.
        unsafe {
            core::ptr::write_bytes(iopm as *mut u8, 0xFF, 3 * 4096);
            core::ptr::write_bytes(msrpm as *mut u8, 0xFF, 2 * 4096);
        }
        let mut v = SvmVcpu { vmcb, iopm, msrpm, gprs: GuestGprs::default(), world };
        v.w32(ctl::INTERCEPT_EXCEPTIONS, ALL_EXCEPTIONS);
        v.w32(
            ctl::INTERCEPT_MISC1,
            INTERCEPT_INTR
                | INTERCEPT_NMI
                | INTERCEPT_RDPMC
                | INTERCEPT_CPUID
                | INTERCEPT_INVD
                | INTERCEPT_HLT
                | INTERCEPT_INVLPGA
                | INTERCEPT_IOIO
                | INTERCEPT_MSR
                | INTERCEPT_TASK_SWITCH
                | INTERCEPT_SHUTDOWN,
        );
        v.w32(
            ctl::INTERCEPT_MISC2,
            INTERCEPT_SVM_INSTRUCTIONS
                | INTERCEPT_ICEBP
                | INTERCEPT_WBINVD
                | INTERCEPT_MONITOR_MWAIT
                | INTERCEPT_XSETBV
                | INTERCEPT_RDPRU,
        );
        v.w64(ctl::IOPM_BASE, iopm);
        v.w64(ctl::MSRPM_BASE, msrpm);
        v.w32(ctl::ASID, asid.max(1));
        // V_INTR_MASKING: host interrupts stay governed by the host's RFLAGS.IF.
        v.w64(ctl::VINTR, 1 << 24);
        v.w64(ctl::NP_ENABLE, 1);
        v.w64(ctl::N_CR3, nested_cr3);
        Ok(v)
    }

    fn at(&self, off: usize) -> u64 {
        self.vmcb + off as u64
    }

    fn w8(&mut self, off: usize, v: u8) {
        // SAFETY: `off` is a byte field inside the VMCB frame this vCPU owns; the guest is
        // not running while the VMCB changes.
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u8, v) }
    }

    fn w16(&mut self, off: usize, v: u16) {
        // SAFETY: `off` is a field offset inside the VMCB frame this vCPU owns, aligned
        // for the field; the guest is not running while the VMCB changes.
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u16, v) }
    }

    fn w32(&mut self, off: usize, v: u32) {
        // SAFETY: as for `w16`.
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u32, v) }
    }

    fn w64(&mut self, off: usize, v: u64) {
        // SAFETY: as for `w16`.
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u64, v) }
    }

    fn r8(&self, off: usize) -> u8 {
        // SAFETY: as for `w8`, reading.
        unsafe { core::ptr::read_volatile(self.at(off) as *const u8) }
    }

    fn r64(&self, off: usize) -> u64 {
        // SAFETY: as for `w16`, reading.
        unsafe { core::ptr::read_volatile(self.at(off) as *const u64) }
    }

    /// CPUID (2 bytes, no NRIP under TCG): the filtered view of `intercept::guest_cpuid`.
    fn emulate_cpuid(&mut self, rip: u64) -> VmExit {
        let Ok(facts) = world::host_facts() else {
            return VmExit::Refused { instruction: "CPUID", rip };
        };
        let leaf = self.r64(save::RAX) as u32;
        let r = intercept::guest_cpuid(
            leaf,
            self.gprs.rcx as u32,
            self.r64(save::CR4),
            facts.mask,
            facts.area_size as u32,
        );
        self.w64(save::RAX, r[0] as u64);
        self.gprs.rbx = r[1] as u64;
        self.gprs.rcx = r[2] as u64;
        self.gprs.rdx = r[3] as u64;
        self.w64(save::RIP, rip.wrapping_add(2));
        VmExit::Emulated { instruction: "CPUID" }
    }

    /// XSETBV (3 bytes): XCR0 only (ECX = 0), at CPL 0 with the guest's CR4.OSXSAVE, and
    /// only a value `intercept::xcr0_allowed` accepts; anything else stops the guest.
    fn emulate_xsetbv(&mut self, rip: u64) -> VmExit {
        let refused =
            VmExit::Refused { instruction: "XSETBV of a value the host does not allow", rip };
        let Ok(facts) = world::host_facts() else {
            return refused;
        };
        let value = (self.gprs.rdx & 0xFFFF_FFFF) << 32 | (self.r64(save::RAX) & 0xFFFF_FFFF);
        let cpl = self.r8(save::CPL);
        let osxsave = self.r64(save::CR4) & 1 << 18 != 0;
        if self.gprs.rcx as u32 != 0 || cpl != 0 || !osxsave {
            return refused;
        }
        if let Err(why) = intercept::xcr0_allowed(value, facts.mask) {
            log::warn!("svm: guest XSETBV {value:#x} refused: {why}");
            return refused;
        }
        self.world.xcr0 = value;
        self.w64(save::RIP, rip.wrapping_add(3));
        VmExit::Emulated { instruction: "XSETBV" }
    }

    fn segment(&mut self, off: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
        self.w16(off, selector);
        self.w16(off + 2, attrib);
        self.w32(off + 4, limit);
        self.w64(off + 8, base);
    }

    /// Decodes the exit (`svm_exit::decode`) and performs what it asks of the backend:
    /// CPUID and XSETBV emulation, a host WBINVD, the host's machine-check handler.
    fn decode(&mut self) -> VmExit {
        let code = self.r64(ctl::EXIT_CODE);
        let info1 = self.r64(ctl::EXIT_INFO1);
        let info2 = self.r64(ctl::EXIT_INFO2);
        let rip = self.r64(save::RIP);
        match svm_exit::decode(code, info1, info2, rip) {
            Decoded::Exit(e) => e,
            Decoded::Cpuid => self.emulate_cpuid(rip),
            Decoded::Xsetbv => self.emulate_xsetbv(rip),
            Decoded::CacheFlush { invd } => {
                // SAFETY: WBINVD writes back and invalidates the caches; it changes no
                // memory contents, only costs time (bounded by the run's exit budget).
                unsafe { core::arch::asm!("wbinvd", options(nostack)) };
                self.w64(save::RIP, rip.wrapping_add(2));
                VmExit::Emulated { instruction: if invd { "INVD" } else { "WBINVD" } }
            }
            Decoded::MachineCheck => {
                // The machine check is the host's: its handler sees it as if delivered.
                // SAFETY: INT 18 runs the host's #MC handler (IDT vector 18, on its IST
                // stack); it returns or stops the machine, as for a host machine check.
                unsafe { core::arch::asm!("int 18", options(nostack)) };
                VmExit::MachineCheck { rip }
            }
        }
    }
}

impl VcpuBackend for SvmVcpu {
    fn name(&self) -> &'static str {
        "SVM"
    }

    fn enter_long_mode(&mut self, e: &EntryState) {
        for off in [save::ES, save::SS, save::DS] {
            self.segment(off, 0x10, DATA, u32::MAX, 0);
        }
        self.segment(save::CS, 0x08, CODE64, u32::MAX, 0);
        // No GDT or IDT: the guest never reloads a segment, and every exception it could
        // take is intercepted (or, with intercepts off, escalates to a shutdown).
        self.segment(save::GDTR, 0, 0, 0, 0);
        if let Some(gdt) = e.boot_gdt {
            // The Linux boot protocol's GDT: __BOOT_CS 0x10, __BOOT_DS 0x18.
            for off in [save::ES, save::SS, save::DS] {
                self.segment(off, 0x18, DATA, u32::MAX, 0);
            }
            self.segment(save::CS, 0x10, CODE64, u32::MAX, 0);
            self.segment(save::GDTR, 0, 0, 31, gdt);
        }
        self.segment(save::IDTR, 0, 0, 0, 0);
        // The clean start of what VMLOAD loads (see `world.rs`): null FS/GS at base 0,
        // TR a busy 64-bit TSS at 0, LDTR an LDT at 0, KERNEL_GS_BASE and the SYSCALL and
        // SYSENTER MSRs 0; a restarted guest finds none of its earlier values.
        for off in [save::FS, save::GS] {
            self.segment(off, 0, 0, 0, 0);
        }
        self.segment(save::TR, 0, TSS64_BUSY, 0xFFFF, 0);
        self.segment(save::LDTR, 0, LDT, 0xFFFF, 0);
        for off in VMSAVE_FIELDS[8..].iter() {
            self.w64(*off, 0);
        }
        self.world.reset();
        self.w8(save::CPL, 0);
        // EFER: LME | LMA | SVME (VMRUN requires the guest's SVME).
        self.w64(save::EFER, 1 << 8 | 1 << 10 | EFER_SVME);
        self.w64(save::CR4, 1 << 5); // PAE
        self.w64(save::CR3, e.cr3);
        // CR0: PE, MP, ET, NE, WP, PG.
        self.w64(save::CR0, 0x8001_0033);
        self.w64(save::DR7, 0x400);
        self.w64(save::DR6, 0xFFFF_0FF0);
        self.w64(save::RFLAGS, 0x2);
        self.w64(save::RIP, e.rip);
        self.w64(save::RSP, e.rsp);
        self.w64(save::RAX, 0);
        self.w64(save::G_PAT, 0x0007_0406_0007_0406);
        self.gprs = GuestGprs { rdi: e.rdi, rsi: e.rsi, ..GuestGprs::default() };
        self.w64(ctl::EVENT_INJ, 0);
    }

    fn set_exception_intercepts(&mut self, vectors: u32) {
        let forced = if intercepts_forced() { ALWAYS_INTERCEPTED } else { 0 };
        self.w32(ctl::INTERCEPT_EXCEPTIONS, vectors | forced);
    }

    fn run(&mut self) -> VmExit {
        // Partitions share ASIDs across runs: flush the guest TLB on every entry (cheap
        // under emulation, and always correct).
        self.w32(ctl::TLB_CONTROL, 1);
        x86_64::instructions::interrupts::enable();
        let host = self.world.enter();
        let host_save = world::host_save_page();
        // SAFETY: SVM is enabled with a host save area (`new` called `enable`); the VMCB
        // is a page-aligned frame this vCPU owns, filled by `new`/`enter_long_mode` with
        // its permission maps, nested tables and the state VMLOAD reads; `host_save` is
        // the host's own vmsave page (or 0); the routine restores every callee-saved
        // register and the stack, and GIF is set again (host state back) before it returns.
        unsafe { partition_svm_vmrun(self.vmcb, &mut self.gprs, host_save) };
        // An injected exception was delivered by that VMRUN (QEMU clears the field on
        // #VMEXIT, the APM does not promise it): never inject it twice.
        self.w64(ctl::EVENT_INJ, 0);
        self.world.leave(host);
        self.decode()
    }

    fn reg(&self, r: Reg) -> u64 {
        match r {
            Reg::Rax => self.r64(save::RAX),
            Reg::Rcx => self.gprs.rcx,
            Reg::Rsi => self.gprs.rsi,
            Reg::Rdx => self.gprs.rdx,
            Reg::Rip => self.r64(save::RIP),
        }
    }

    fn set_reg(&mut self, r: Reg, value: u64) {
        match r {
            Reg::Rax => self.w64(save::RAX, value),
            Reg::Rcx => self.gprs.rcx = value,
            Reg::Rsi => self.gprs.rsi = value,
            Reg::Rdx => self.gprs.rdx = value,
            Reg::Rip => self.w64(save::RIP, value),
        }
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        // EVENTINJ: vector, type 3 (exception), EV (error code valid), V; the code above.
        let ev = u64::from(error_code.is_some()) << 11;
        let code = u64::from(error_code.unwrap_or(0)) << 32;
        self.w64(ctl::EVENT_INJ, u64::from(vector) | 3 << 8 | ev | 1 << 31 | code);
    }

    fn guest_msr(&self, msr: u32) -> Option<u64> {
        Some(match msr {
            // The guest never sees the SVME bit VMRUN needs.
            MSR_EFER => self.r64(save::EFER) & !EFER_SVME,
            _ => self.r64(msr_field(msr)?),
        })
    }

    fn set_guest_msr(&mut self, msr: u32, value: u64) -> bool {
        use super::linux::msr::{canonical, efer_write, pat_valid};
        match msr {
            MSR_EFER => match efer_write(self.r64(save::EFER) & !EFER_SVME, value, true) {
                Some(efer) => {
                    self.w64(save::EFER, efer | EFER_SVME);
                    true
                }
                None => false,
            },
            0x277 if !pat_valid(value) => false,
            // Segment bases, LSTAR/CSTAR and SYSENTER_ESP/EIP are addresses.
            0xC000_0100..=0xC000_0102 | 0xC000_0082 | 0xC000_0083 | 0x175 | 0x176
                if !canonical(value) =>
            {
                false
            }
            _ => match msr_field(msr) {
                Some(off) => {
                    self.w64(off, value);
                    true
                }
                None => false,
            },
        }
    }

    fn set_rip(&mut self, rip: u64) {
        self.w64(save::RIP, rip);
        // Moving past an instruction ends the STI/MOV SS interrupt shadow it was in.
        let shadow = self.r64(ctl::INTERRUPT_SHADOW);
        self.w64(ctl::INTERRUPT_SHADOW, shadow & !1);
    }

    fn set_rax(&mut self, value: u64) {
        self.w64(save::RAX, value);
    }

    fn inject_interrupt(&mut self, vector: u8) {
        let v = self.r64(ctl::VINTR);
        let v = V_INTR_VECTOR.set(
            V_IRQ.with(V_IGN_TPR.with(V_INTR_PRIO.set(v, 0xF), true), true),
            u64::from(vector),
        );
        self.w64(ctl::VINTR, v);
    }

    fn interrupt_waiting(&self) -> bool {
        V_IRQ.is_set(self.r64(ctl::VINTR))
    }

    fn cancel_interrupt(&mut self) {
        let v = self.r64(ctl::VINTR);
        self.w64(ctl::VINTR, V_IRQ.with(v, false));
    }

    fn gpr(&self, index: u8) -> u64 {
        let g = &self.gprs;
        match index {
            0 => self.r64(save::RAX),
            1 => g.rcx,
            2 => g.rdx,
            3 => g.rbx,
            4 => self.r64(save::RSP),
            5 => g.rbp,
            6 => g.rsi,
            7 => g.rdi,
            8 => g.r8,
            9 => g.r9,
            10 => g.r10,
            11 => g.r11,
            12 => g.r12,
            13 => g.r13,
            14 => g.r14,
            15 => g.r15,
            _ => 0,
        }
    }

    fn set_gpr(&mut self, index: u8, value: u64) {
        let g = &mut self.gprs;
        let slot = match index {
            0 => return self.w64(save::RAX, value),
            4 => return self.w64(save::RSP, value),
            1 => &mut g.rcx,
            2 => &mut g.rdx,
            3 => &mut g.rbx,
            5 => &mut g.rbp,
            6 => &mut g.rsi,
            7 => &mut g.rdi,
            8 => &mut g.r8,
            9 => &mut g.r9,
            10 => &mut g.r10,
            11 => &mut g.r11,
            12 => &mut g.r12,
            13 => &mut g.r13,
            14 => &mut g.r14,
            15 => &mut g.r15,
            _ => return,
        };
        *slot = value;
    }

    fn control(&self) -> GuestControl {
        // CS attributes (12-bit VMCB form): L is bit 9.
        let cs_attrib = self.r64(save::CS) >> 16 & 0xFFFF;
        let efer = self.r64(save::EFER);
        GuestControl {
            cr0: self.r64(save::CR0),
            cr3: self.r64(save::CR3),
            cr4: self.r64(save::CR4),
            efer,
            rflags: self.r64(save::RFLAGS),
            code64: efer & 1 << 10 != 0 && cs_attrib & 1 << 9 != 0,
            delivering_event: self.r64(ctl::EXIT_INT_INFO) & 1 << 31 != 0,
        }
    }
}

/// Where the VMCB keeps a guest MSR VMRUN or VMLOAD loads (EFER aside).
fn msr_field(msr: u32) -> Option<usize> {
    Some(match msr {
        0x277 => save::G_PAT,
        0x174 => save::SYSENTER_CS,
        0x175 => save::SYSENTER_ESP,
        0x176 => save::SYSENTER_EIP,
        0xC000_0081 => save::STAR,
        0xC000_0082 => save::LSTAR,
        0xC000_0083 => save::CSTAR,
        0xC000_0084 => save::SFMASK,
        0xC000_0100 => save::FS + 8,
        0xC000_0101 => save::GS + 8,
        0xC000_0102 => save::KERNEL_GS_BASE,
        _ => return None,
    })
}

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        // The VMCB holds guest register values: zero it with the maps before reuse.
        frames::zero(self.vmcb, 4096);
        frames::free(self.vmcb);
        frames::free_contiguous(self.iopm, 3);
        frames::free_contiguous(self.msrpm, 2);
    }
}
