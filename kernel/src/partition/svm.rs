//! AMD SVM: enabling it on the host (EFER.SVME, the host save area), the VMCB, the I/O
//! and MSR permission maps, `clgi; vmrun; stgi`, and exit decoding into [`VmExit`].
//!
//! Under QEMU TCG there is no NRIP save: the next RIP of an I/O exit is EXITINFO2, and
//! skipped VMMCALL/HLT instructions are advanced by their length.

use super::vcpu::{EntryState, Reg, VcpuBackend, VmExit};
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
    pub const EXIT_CODE: usize = 0x070;
    pub const EXIT_INFO1: usize = 0x078;
    pub const EXIT_INFO2: usize = 0x080;
    pub const NP_ENABLE: usize = 0x090;
    pub const N_CR3: usize = 0x0B0;
}

/// State-save-area offsets.
mod save {
    pub const ES: usize = 0x400;
    pub const CS: usize = 0x410;
    pub const SS: usize = 0x420;
    pub const DS: usize = 0x430;
    pub const GDTR: usize = 0x460;
    pub const IDTR: usize = 0x480;
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
    pub const G_PAT: usize = 0x668;
}

/// VINTR (offset 0x060): a virtual interrupt is requested (cleared when the guest takes it).
const V_IRQ: iommu::bits::Field = iommu::bits::Field::bit(8);
/// VINTR: its priority (compared with V_TPR unless V_IGN_TPR).
const V_INTR_PRIO: iommu::bits::Field = iommu::bits::Field::new(16, 4);
/// VINTR: ignore the virtual TPR.
const V_IGN_TPR: iommu::bits::Field = iommu::bits::Field::bit(20);
/// VINTR: the virtual interrupt's vector.
const V_INTR_VECTOR: iommu::bits::Field = iommu::bits::Field::new(32, 8);

// Intercept bits, vector 3 (offset 0x00C) and vector 4 (0x010).
const INTERCEPT_INTR: u32 = 1 << 0;
const INTERCEPT_NMI: u32 = 1 << 1;
const INTERCEPT_HLT: u32 = 1 << 24;
const INTERCEPT_IOIO: u32 = 1 << 27;
const INTERCEPT_MSR: u32 = 1 << 28;
const INTERCEPT_SHUTDOWN: u32 = 1 << 31;
/// VMRUN, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT: the guest uses none of SVM.
const INTERCEPT_SVM_INSTRUCTIONS: u32 = 0x7F;

// Exit codes.
const EXIT_EXCEPTION_0: u64 = 0x40;
const EXIT_INTR: u64 = 0x60;
const EXIT_NMI: u64 = 0x61;
const EXIT_HLT: u64 = 0x78;
const EXIT_IOIO: u64 = 0x7B;
const EXIT_MSR: u64 = 0x7C;
const EXIT_SHUTDOWN: u64 = 0x7F;
const EXIT_VMMCALL: u64 = 0x81;
const EXIT_NPF: u64 = 0x400;
const EXIT_INVALID: u64 = u64::MAX;

/// Exceptions intercepted by default: every vector (the guest has no IDT of its own).
pub const ALL_EXCEPTIONS: u32 = u32::MAX;

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
}

impl fmt::Display for SvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SvmError::NotSupported => "the CPU has no AMD SVM (use -cpu max under QEMU)",
            SvmError::DisabledByFirmware => "SVM is disabled by the firmware (VM_CR.SVMDIS)",
            SvmError::NoNestedPaging => "the CPU has SVM but no nested paging",
            SvmError::OutOfFrames => "out of frames for SVM structures",
        })
    }
}

static ENABLED: spin::Once<Result<(), SvmError>> = spin::Once::new();

fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid(leaf)
}

/// Checks for SVM with nested paging and enables it on this (the boot) CPU once: sets
/// EFER.SVME and points VM_HSAVE_PA at a fresh host save area.
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

// Saves the host's callee-saved registers, loads the guest's from `GuestGprs` (RSI), runs
// the guest with `clgi; vmrun; stgi` on the VMCB at RDI, stores the guest's registers
// back and restores the host's. A pending host interrupt is taken right after `stgi`.
core::arch::global_asm!(
    ".global partition_svm_vmrun",
    "partition_svm_vmrun:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rsi",
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
    fn partition_svm_vmrun(vmcb: u64, gprs: *mut GuestGprs);
}

/// An SVM virtual CPU: its VMCB, I/O permission map (12 KiB, every port intercepted),
/// MSR permission map (8 KiB, every MSR intercepted) and the registers VMRUN leaves to
/// software.
pub struct SvmVcpu {
    vmcb: u64,
    iopm: u64,
    msrpm: u64,
    gprs: GuestGprs,
}

/// A 12-bit VMCB segment attribute: 64-bit code (type 0xB, S, P, L, G).
const CODE64: u16 = 0xA9B;
/// Flat data (type 3, S, P, D/B, G).
const DATA: u16 = 0xC93;

impl SvmVcpu {
    /// A vCPU for a guest whose nested tables are rooted at `nested_cr3`, with
    /// address-space id `asid` (nonzero).
    pub fn new(nested_cr3: u64, asid: u32) -> Result<SvmVcpu, SvmError> {
        enable()?;
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
        let mut v = SvmVcpu { vmcb, iopm, msrpm, gprs: GuestGprs::default() };
        v.w32(ctl::INTERCEPT_EXCEPTIONS, ALL_EXCEPTIONS);
        v.w32(
            ctl::INTERCEPT_MISC1,
            INTERCEPT_INTR
                | INTERCEPT_NMI
                | INTERCEPT_HLT
                | INTERCEPT_IOIO
                | INTERCEPT_MSR
                | INTERCEPT_SHUTDOWN,
        );
        v.w32(ctl::INTERCEPT_MISC2, INTERCEPT_SVM_INSTRUCTIONS);
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

    fn r64(&self, off: usize) -> u64 {
        // SAFETY: as for `w16`, reading.
        unsafe { core::ptr::read_volatile(self.at(off) as *const u64) }
    }

    fn segment(&mut self, off: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
        self.w16(off, selector);
        self.w16(off + 2, attrib);
        self.w32(off + 4, limit);
        self.w64(off + 8, base);
    }

    fn decode(&self) -> VmExit {
        let code = self.r64(ctl::EXIT_CODE);
        let info1 = self.r64(ctl::EXIT_INFO1);
        let info2 = self.r64(ctl::EXIT_INFO2);
        let rip = self.r64(save::RIP);
        match code {
            EXIT_IOIO => VmExit::Io {
                port: (info1 >> 16) as u16,
                size: ((info1 >> 4) & 7) as u8,
                write: info1 & 1 == 0,
                string: info1 & (1 << 2 | 1 << 3) != 0,
                next_rip: info2,
            },
            // The guest's RIP is guest-controlled: wrap like the CPU would rather than overflow.
            EXIT_VMMCALL => VmExit::Hypercall { next_rip: rip.wrapping_add(3) },
            EXIT_HLT => VmExit::Halt,
            EXIT_SHUTDOWN => VmExit::Shutdown,
            EXIT_INTR | EXIT_NMI => VmExit::HostInterrupt,
            EXIT_MSR => VmExit::Msr { rip },
            EXIT_NPF => VmExit::NestedPageFault { gpa: info2, error_code: info1, rip },
            EXIT_INVALID => VmExit::InvalidState,
            c if (EXIT_EXCEPTION_0..EXIT_EXCEPTION_0 + 32).contains(&c) => {
                VmExit::Exception { vector: (c - EXIT_EXCEPTION_0) as u8, error_code: info1, rip }
            }
            _ => VmExit::Other { code, rip },
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
        self.segment(save::IDTR, 0, 0, 0, 0);
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
        self.gprs = GuestGprs { rdi: e.rdi, ..GuestGprs::default() };
    }

    fn set_exception_intercepts(&mut self, vectors: u32) {
        self.w32(ctl::INTERCEPT_EXCEPTIONS, vectors);
    }

    fn run(&mut self) -> VmExit {
        // Partitions share ASIDs across runs: flush the guest TLB on every entry (cheap
        // under emulation, and always correct).
        self.w32(ctl::TLB_CONTROL, 1);
        x86_64::instructions::interrupts::enable();
        // SAFETY: SVM is enabled with a host save area (`new` called `enable`); the VMCB
        // is a page-aligned frame this vCPU owns, filled by `new`/`enter_long_mode` with
        // its permission maps and nested tables; the routine restores every callee-saved
        // register and the stack, and GIF is set again before it returns.
        unsafe { partition_svm_vmrun(self.vmcb, &mut self.gprs) };
        self.decode()
    }

    fn reg(&self, r: Reg) -> u64 {
        match r {
            Reg::Rax => self.r64(save::RAX),
            Reg::Rcx => self.gprs.rcx,
            Reg::Rsi => self.gprs.rsi,
            Reg::Rip => self.r64(save::RIP),
        }
    }

    fn set_rip(&mut self, rip: u64) {
        self.w64(save::RIP, rip);
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
