//! Intel VMX: VMX operation on the host (IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits,
//! VMXON), a VMCS per vCPU with its controls adjusted through the TRUE capability MSRs,
//! I/O and MSR bitmaps that intercept everything, EPT and VPID, and the entry routine.
//! Exits are decoded in `exit.rs` into the same `Decoded`/[`VmExit`] as SVM's, and the
//! intercept policy (`intercept.rs`) and the extended-state switch (`world.rs`'s
//! [`GuestWorld`]) are the SVM backend's. The VMCS host-state area restores CR0/CR3/CR4,
//! every segment selector, FS/GS/TR/GDTR/IDTR bases, SYSENTER, EFER and PAT on every
//! exit; what it does not (the GDTR/IDTR limits, which VM exit sets to 0xFFFF, and
//! KERNEL_GS_BASE, which a guest SWAPGS changes) is put back by [`VmxVcpu::run`].

pub mod exit;
pub mod host;
pub mod vmcs;

use super::svm_exit::Decoded;
use super::vcpu::{EntryState, Reg, VcpuBackend, VmExit};
use super::world::GuestWorld;
use super::{intercept, world};
use crate::mem::frames;
use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use exit::ExitInfo;
use vmcs::{read, write, Field, VmFail};
use x86_64::registers::model_specific::Msr;

const MSR_FEATURE_CONTROL: u32 = 0x3A;
const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
const MSR_VMX_BASIC: u32 = 0x480;
const MSR_VMX_PINBASED: u32 = 0x481;
const MSR_VMX_PROCBASED: u32 = 0x482;
const MSR_VMX_EXIT: u32 = 0x483;
const MSR_VMX_ENTRY: u32 = 0x484;
const MSR_VMX_CR0_FIXED0: u32 = 0x486;
const MSR_VMX_CR0_FIXED1: u32 = 0x487;
const MSR_VMX_CR4_FIXED0: u32 = 0x488;
const MSR_VMX_CR4_FIXED1: u32 = 0x489;
const MSR_VMX_PROCBASED2: u32 = 0x48B;
const MSR_VMX_EPT_VPID_CAP: u32 = 0x48C;
const MSR_VMX_TRUE_PINBASED: u32 = 0x48D;
const MSR_VMX_TRUE_PROCBASED: u32 = 0x48E;
const MSR_VMX_TRUE_EXIT: u32 = 0x48F;
const MSR_VMX_TRUE_ENTRY: u32 = 0x490;
/// IA32_VMX_BASIC bit 55: the TRUE control MSRs exist.
const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
const CR4_VMXE: u64 = 1 << 13;

// Pin-based controls.
/// Host interrupts end the guest's slice (the host timer bounds every run).
const PIN_EXTERNAL_INTERRUPT: u32 = 1 << 0;
/// NMIs are the host's.
const PIN_NMI: u32 = 1 << 3;
/// The VMX-preemption timer ends a slice after [`SLICE_TSC`] cycles even when no host
/// interrupt does (Bochs 2.7 never delivers the host's interrupt to a guest entered with
/// RFLAGS.IF = 0 from a host with IF = 0: see docs/bochs.md). Used when the CPU has it.
const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
/// The longest slice in TSC cycles when the preemption timer is active (a few ms at
/// GHz rates; about one host timer tick under Bochs).
const SLICE_TSC: u64 = 4_000_000;
const MSR_VMX_MISC: u32 = 0x485;
// Primary processor-based controls.
/// A guest with interrupts enabled exits so a pending virtual interrupt can be injected.
const PROC_INTERRUPT_WINDOW: u32 = 1 << 2;
/// HLT: the guest is done with the CPU; the run ends.
const PROC_HLT: u32 = 1 << 7;
/// MWAIT: CPUID says there is none; refused.
const PROC_MWAIT: u32 = 1 << 10;
/// RDPMC: the performance counters are the host's; refused.
const PROC_RDPMC: u32 = 1 << 11;
/// I/O through the bitmaps (all ones: only the hypercall port is served).
const PROC_IO_BITMAPS: u32 = 1 << 25;
/// MSRs through the bitmaps (all ones: none is emulated; any access stops the guest).
const PROC_MSR_BITMAPS: u32 = 1 << 28;
/// MONITOR: refused.
const PROC_MONITOR: u32 = 1 << 29;
const PROC_SECONDARY: u32 = 1 << 31;
// Secondary controls.
const SECONDARY_EPT: u32 = 1 << 1;
/// RDTSCP as on bare metal (not intercepted, like RDTSC: see `intercept.rs`).
const SECONDARY_RDTSCP: u32 = 1 << 3;
const SECONDARY_VPID: u32 = 1 << 5;
/// WBINVD: executed by the host on the guest's behalf (emulated).
const SECONDARY_WBINVD: u32 = 1 << 6;
/// Guest real mode and unpaged protected mode (not needed: guests start in long mode).
const SECONDARY_UNRESTRICTED_GUEST: u32 = 1 << 7;
// VM-exit controls.
const EXIT_SAVE_DEBUG: u32 = 1 << 2;
const EXIT_HOST_64BIT: u32 = 1 << 9;
const EXIT_SAVE_PAT: u32 = 1 << 18;
const EXIT_LOAD_PAT: u32 = 1 << 19;
const EXIT_SAVE_EFER: u32 = 1 << 20;
const EXIT_LOAD_EFER: u32 = 1 << 21;
// VM-entry controls.
const ENTRY_LOAD_DEBUG: u32 = 1 << 2;
const ENTRY_64BIT_GUEST: u32 = 1 << 9;
const ENTRY_LOAD_PAT: u32 = 1 << 14;
const ENTRY_LOAD_EFER: u32 = 1 << 15;
// IA32_VMX_EPT_VPID_CAP.
const EPT_WALK_4: u64 = 1 << 6;
const EPT_WB: u64 = 1 << 14;
const EPT_2M: u64 = 1 << 16;
const EPT_1G: u64 = 1 << 17;
const EPT_INVEPT: u64 = 1 << 20;
const EPT_INVEPT_SINGLE: u64 = 1 << 25;
const EPT_INVEPT_ALL: u64 = 1 << 26;
const CAP_INVVPID: u64 = 1 << 32;
const CAP_INVVPID_SINGLE: u64 = 1 << 41;
const CAP_INVVPID_ALL: u64 = 1 << 42;

/// Why VMX cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmxError {
    /// CPUID reports no VMX (an AMD machine uses the SVM backend).
    NotSupported,
    /// IA32_FEATURE_CONTROL is locked with VMX outside SMX off (a firmware setting).
    DisabledByFirmware,
    /// A control the backend needs cannot be set (its name).
    MissingControl(&'static str),
    /// EPT lacks what the backend needs (4-level walks, write-back, 2 MiB pages, INVEPT).
    EptLacking(&'static str),
    /// VMXON failed.
    VmxonFailed,
    /// A VMX instruction failed (VMCLEAR, VMPTRLD, VMWRITE, ...).
    Instruction(VmFail),
    /// No frame for the VMXON region, a VMCS or a bitmap.
    OutOfFrames,
    /// The world switch's host side (XSAVE) is missing.
    World(super::svm::SvmError),
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmxError::NotSupported => f.write_str("the CPU has no Intel VMX"),
            VmxError::DisabledByFirmware => {
                f.write_str("VMX is disabled by the firmware (IA32_FEATURE_CONTROL locked)")
            }
            VmxError::MissingControl(c) => write!(f, "the CPU cannot set the VMX control {c}"),
            VmxError::EptLacking(what) => write!(f, "EPT has no {what}"),
            VmxError::VmxonFailed => f.write_str("VMXON failed"),
            VmxError::Instruction(e) => {
                write!(
                    f,
                    "a VMX instruction failed (field {}, VM-instruction error {})",
                    e.field, e.error
                )
            }
            VmxError::OutOfFrames => f.write_str("out of frames for VMX structures"),
            VmxError::World(e) => write!(f, "{e}"),
        }
    }
}

impl From<VmFail> for VmxError {
    fn from(e: VmFail) -> Self {
        VmxError::Instruction(e)
    }
}

/// What `enable` found out once: the adjusted controls and the EPT/VPID capabilities.
#[derive(Debug, Clone, Copy)]
struct Caps {
    revision: u32,
    pin: u32,
    primary: u32,
    secondary: u32,
    exit: u32,
    entry: u32,
    ept_vpid: u64,
}

static ENABLED: spin::Once<Result<Caps, VmxError>> = spin::Once::new();

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: only called for the VMX capability MSRs and IA32_FEATURE_CONTROL, which
    // exist on every CPU that reports VMX (checked first by `enable`).
    unsafe { Msr::new(msr).read() }
}

/// A control word from a capability MSR: bits that must be 1 set, `wanted` added, and
/// every bit of `needed` checked against what may be 1.
fn adjust(msr: u32, wanted: u32, needed: u32, what: &'static str) -> Result<u32, VmxError> {
    let cap = rdmsr(msr);
    let (must, may) = (cap as u32, (cap >> 32) as u32);
    if needed & !may != 0 {
        return Err(VmxError::MissingControl(what));
    }
    Ok((must | wanted) & may)
}

/// Checks for VMX with EPT and enters VMX operation on this (the boot) CPU once:
/// IA32_FEATURE_CONTROL (locked with VMX on, or set and locked here), CR0 and CR4 with
/// the fixed bits and CR4.VMXE, a VMXON region with the VMCS revision, VMXON; the
/// controls adjusted through the TRUE capability MSRs when the CPU has them.
pub fn enable() -> Result<(), VmxError> {
    ENABLED.call_once(enter_vmx_operation).as_ref().map(|_| ()).map_err(|e| *e)
}

fn caps() -> Result<Caps, VmxError> {
    *ENABLED.call_once(enter_vmx_operation)
}

fn enter_vmx_operation() -> Result<Caps, VmxError> {
    if core::arch::x86_64::__cpuid(1).ecx & (1 << 5) == 0 {
        return Err(VmxError::NotSupported);
    }
    let fc = rdmsr(MSR_FEATURE_CONTROL);
    if fc & FEATURE_CONTROL_LOCKED != 0 && fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(VmxError::DisabledByFirmware);
    }
    if fc & FEATURE_CONTROL_LOCKED == 0 {
        // SAFETY: the MSR is unlocked: enabling VMX outside SMX and locking it is what
        // firmware would have done; it changes nothing else.
        unsafe {
            Msr::new(MSR_FEATURE_CONTROL)
                .write(fc | FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX)
        };
    }
    let basic = rdmsr(MSR_VMX_BASIC);
    let true_msrs = basic & BASIC_TRUE_CONTROLS != 0;
    let pick = |plain, true_msr| if true_msrs { true_msr } else { plain };
    let pin_needed = PIN_EXTERNAL_INTERRUPT | PIN_NMI;
    let pin = adjust(
        pick(MSR_VMX_PINBASED, MSR_VMX_TRUE_PINBASED),
        pin_needed,
        pin_needed,
        "pin-based interrupt/NMI exiting",
    )?;
    let primary_needed = PROC_HLT
        | PROC_MWAIT
        | PROC_RDPMC
        | PROC_IO_BITMAPS
        | PROC_MSR_BITMAPS
        | PROC_MONITOR
        | PROC_SECONDARY;
    let primary = adjust(
        pick(MSR_VMX_PROCBASED, MSR_VMX_TRUE_PROCBASED),
        primary_needed,
        primary_needed | PROC_INTERRUPT_WINDOW,
        "HLT/MWAIT/RDPMC/MONITOR exiting, I/O and MSR bitmaps, secondary controls",
    )?;
    let secondary_needed = SECONDARY_EPT | SECONDARY_VPID | SECONDARY_WBINVD;
    let secondary = adjust(
        MSR_VMX_PROCBASED2,
        secondary_needed | SECONDARY_RDTSCP,
        secondary_needed,
        "EPT, VPID and WBINVD exiting",
    )?;
    let exit_needed =
        EXIT_HOST_64BIT | EXIT_SAVE_PAT | EXIT_LOAD_PAT | EXIT_SAVE_EFER | EXIT_LOAD_EFER;
    let exit = adjust(
        pick(MSR_VMX_EXIT, MSR_VMX_TRUE_EXIT),
        exit_needed | EXIT_SAVE_DEBUG,
        exit_needed,
        "64-bit host, EFER and PAT switching on exit",
    )?;
    let entry_needed = ENTRY_64BIT_GUEST | ENTRY_LOAD_PAT | ENTRY_LOAD_EFER;
    let entry = adjust(
        pick(MSR_VMX_ENTRY, MSR_VMX_TRUE_ENTRY),
        entry_needed | ENTRY_LOAD_DEBUG,
        entry_needed,
        "64-bit guest, EFER and PAT loading on entry",
    )?;
    let ept_vpid = rdmsr(MSR_VMX_EPT_VPID_CAP);
    for (bit, what) in [
        (EPT_WALK_4, "4-level walk"),
        (EPT_WB, "write-back paging structures"),
        (EPT_2M, "2 MiB pages"),
        (EPT_INVEPT, "INVEPT"),
        (CAP_INVVPID, "INVVPID"),
    ] {
        if ept_vpid & bit == 0 {
            return Err(VmxError::EptLacking(what));
        }
    }
    if ept_vpid & (EPT_INVEPT_SINGLE | EPT_INVEPT_ALL) == 0 {
        return Err(VmxError::EptLacking("INVEPT type"));
    }
    if ept_vpid & (CAP_INVVPID_SINGLE | CAP_INVVPID_ALL) == 0 {
        return Err(VmxError::EptLacking("INVVPID type"));
    }
    world::host_facts().map_err(VmxError::World)?;
    let revision = (basic & 0x7FFF_FFFF) as u32;
    let region = frames::alloc_zeroed().ok_or(VmxError::OutOfFrames)?;
    // SAFETY: a fresh frame this code keeps for the rest of the run (the VMXON region);
    // its first word is the VMCS revision identifier.
    unsafe { core::ptr::write_volatile(region as *mut u32, revision) };
    let failed: u8;
    // SAFETY: CR0 and CR4 get exactly the bits VMX operation requires (the fixed-0 ones
    // set, the fixed-1 ones kept; the host runs in long mode with paging, so PE/PG/NE are
    // on already), CR4.VMXE included; VMXON takes the region's physical address (the
    // frame is identity-mapped) and only enters VMX root operation.
    unsafe {
        let (mut cr0, mut cr4): (u64, u64);
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        cr0 = (cr0 | rdmsr(MSR_VMX_CR0_FIXED0)) & rdmsr(MSR_VMX_CR0_FIXED1);
        cr4 = (cr4 | rdmsr(MSR_VMX_CR4_FIXED0) | CR4_VMXE) & rdmsr(MSR_VMX_CR4_FIXED1);
        asm!("mov cr0, {}", in(reg) cr0, options(nomem, nostack));
        asm!("mov cr4, {}", in(reg) cr4, options(nomem, nostack));
        asm!("vmxon [{}]", "setna {}", in(reg) &region, out(reg_byte) failed, options(nostack));
    }
    if failed != 0 {
        frames::free(region);
        return Err(VmxError::VmxonFailed);
    }
    log::debug!("vmx: controls pin {pin:#x} primary {primary:#x} secondary {secondary:#x} exit {exit:#x} entry {entry:#x}");
    log::info!(
        "vmx: enabled (VMCS revision {revision:#x}, {} controls, EPT with 2 MiB{} pages, VPID, unrestricted guest {})",
        if true_msrs { "TRUE" } else { "default" },
        if ept_vpid & EPT_1G != 0 { " and 1 GiB" } else { "" },
        if adjust(MSR_VMX_PROCBASED2, 0, SECONDARY_UNRESTRICTED_GUEST, "").is_ok() { "available (not needed: guests start in long mode)" } else { "absent (not needed: guests start in long mode)" },
    );
    Ok(Caps { revision, pin, primary, secondary, exit, entry, ept_vpid })
}

/// Whether EPT may use 1 GiB leaves here (for the nested tables' format).
pub fn ept_1g_pages() -> bool {
    caps().is_ok_and(|c| c.ept_vpid & EPT_1G != 0)
}

/// Guest general-purpose registers the VMCS does not hold (all but RSP); the layout is
/// what `partition_vmx_run` below expects.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct GuestGprs {
    rax: u64,
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

// partition_vmx_run(gprs: RDI, launched: RSI) -> RAX: 0 after a VM exit, 1 when
// VMLAUNCH/VMRESUME failed. Saves the host's callee-saved registers and the GPRS pointer
// on the stack, writes HOST_RSP (this stack) and HOST_RIP (label 2) into the current
// VMCS, loads the guest's registers and enters; at the exit (label 2, stack as it was)
// stores the guest's registers back and returns. Interrupts are off throughout (the
// caller's `cli`); an exit leaves RFLAGS = 0x2.
core::arch::global_asm!(
    ".global partition_vmx_run",
    "partition_vmx_run:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, {host_rsp}",
    "vmwrite rax, rsp",
    "mov rax, {host_rip}",
    "lea rbx, [rip + 2f]",
    "vmwrite rax, rbx",
    "cmp rsi, 0",
    "mov rax, [rdi + 0x00]",
    "mov rbx, [rdi + 0x08]",
    "mov rcx, [rdi + 0x10]",
    "mov rdx, [rdi + 0x18]",
    "mov rsi, [rdi + 0x20]",
    "mov rbp, [rdi + 0x30]",
    "mov r8, [rdi + 0x38]",
    "mov r9, [rdi + 0x40]",
    "mov r10, [rdi + 0x48]",
    "mov r11, [rdi + 0x50]",
    "mov r12, [rdi + 0x58]",
    "mov r13, [rdi + 0x60]",
    "mov r14, [rdi + 0x68]",
    "mov r15, [rdi + 0x70]",
    "mov rdi, [rdi + 0x28]",
    "jne 3f",
    "vmlaunch",
    "jmp 4f",
    "3:",
    "vmresume",
    "4:",
    // The entry failed: nothing of the guest ran. Host registers back, status 1.
    "pop rdi",
    "mov eax, 1",
    "jmp 5f",
    "2:",
    "push rax",
    "mov rax, [rsp + 8]",
    "mov [rax + 0x08], rbx",
    "mov [rax + 0x10], rcx",
    "mov [rax + 0x18], rdx",
    "mov [rax + 0x20], rsi",
    "mov [rax + 0x28], rdi",
    "mov [rax + 0x30], rbp",
    "mov [rax + 0x38], r8",
    "mov [rax + 0x40], r9",
    "mov [rax + 0x48], r10",
    "mov [rax + 0x50], r11",
    "mov [rax + 0x58], r12",
    "mov [rax + 0x60], r13",
    "mov [rax + 0x68], r14",
    "mov [rax + 0x70], r15",
    "pop rbx",
    "mov [rax + 0x00], rbx",
    "pop rdi",
    "xor eax, eax",
    "5:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    host_rsp = const vmcs::HOST_RSP.encoding,
    host_rip = const vmcs::HOST_RIP.encoding,
);

unsafe extern "C" {
    fn partition_vmx_run(gprs: *mut GuestGprs, launched: u64) -> u64;
}

/// The VMCS that is current on this CPU (0: none), so accessors load theirs only when
/// another one is.
static CURRENT: AtomicU64 = AtomicU64::new(0);
/// The next VPID to hand out (1..=0xFFFF; 0 is the host's).
static NEXT_VPID: AtomicU64 = AtomicU64::new(1);

/// A VMX virtual CPU: its VMCS, I/O bitmaps (8 KiB, every port intercepted), MSR
/// bitmaps (4 KiB, every MSR intercepted), the registers the VMCS does not hold, and
/// what VM exit does not switch.
pub struct VmxVcpu {
    vmcs: u64,
    io_bitmaps: u64,
    msr_bitmap: u64,
    gprs: GuestGprs,
    eptp: u64,
    vpid: u16,
    launched: bool,
    /// Flush this VPID's guest TLB entries before the next entry (new or restarted).
    flush_vpid: bool,
    /// A virtual interrupt waiting for the guest to enable interrupts.
    pending: Option<u8>,
    /// The guest's IA32_KERNEL_GS_BASE (changed by its SWAPGS; VM exit keeps it).
    kernel_gs_base: u64,
    /// What VM exit does not switch: XSAVE state, XCR0, DR0-DR3.
    world: GuestWorld,
    /// The first VMX error of this vCPU (a failed VMWRITE), reported by `run`.
    failed: Option<VmFail>,
}

/// Access rights (VMCS format): 64-bit code (type 0xB, S, P, L, G).
const CODE64: u64 = 0xA09B;
/// Flat data (type 3, S, P, D/B, G).
const DATA: u64 = 0xC093;
/// A present busy 64-bit TSS.
const TSS64_BUSY: u64 = 0x008B;
/// An unusable segment (bit 16).
const UNUSABLE: u64 = 1 << 16;

impl VmxVcpu {
    /// A vCPU for a guest whose EPT tables are rooted at `ept_root`.
    pub fn new(ept_root: u64) -> Result<VmxVcpu, VmxError> {
        let caps = caps()?;
        let world = GuestWorld::new().map_err(VmxError::World)?;
        let vmcs = frames::alloc_zeroed().ok_or(VmxError::OutOfFrames)?;
        let Some(io_bitmaps) = frames::alloc_contiguous(2, 4096) else {
            frames::free(vmcs);
            return Err(VmxError::OutOfFrames);
        };
        let Some(msr_bitmap) = frames::alloc_zeroed() else {
            frames::free(vmcs);
            frames::free_contiguous(io_bitmaps, 2);
            return Err(VmxError::OutOfFrames);
        };
        // SAFETY: fresh frames this vCPU owns, identity-mapped: the revision identifier
        // into the VMCS, all ones into both bitmaps (every port, every MSR intercepted).
        unsafe {
            core::ptr::write_volatile(vmcs as *mut u32, caps.revision);
            core::ptr::write_bytes(io_bitmaps as *mut u8, 0xFF, 2 * 4096);
            core::ptr::write_bytes(msr_bitmap as *mut u8, 0xFF, 4096);
        }
        let vpid = (NEXT_VPID.fetch_add(1, Ordering::SeqCst) % 0xFFFF + 1) as u16;
        let mut v = VmxVcpu {
            vmcs,
            io_bitmaps,
            msr_bitmap,
            gprs: GuestGprs::default(),
            eptp: iommu::pgtable::nested::ept_pointer(ept_root),
            vpid,
            launched: false,
            flush_vpid: true,
            pending: None,
            kernel_gs_base: 0,
            world,
            failed: None,
        };
        // SAFETY: VMCLEAR initializes the fresh VMCS (revision written above) and makes
        // it inactive; VMX operation is on (`caps` succeeded).
        if unsafe { vmx_op_clear(vmcs) } {
            return Err(VmxError::Instruction(VmFail { field: "VMCLEAR", error: 0 }));
        }
        v.load()?;
        v.setup(&caps)?;
        Ok(v)
    }

    /// Makes this vCPU's VMCS the current one (VMPTRLD) unless it already is.
    fn load(&self) -> Result<(), VmxError> {
        if CURRENT.load(Ordering::SeqCst) == self.vmcs {
            return Ok(());
        }
        // SAFETY: the VMCS is this vCPU's frame, initialized by VMCLEAR; VMPTRLD only
        // makes it current.
        if unsafe { vmx_op_ptrld(self.vmcs) } {
            return Err(VmxError::Instruction(VmFail { field: "VMPTRLD", error: 0 }));
        }
        CURRENT.store(self.vmcs, Ordering::SeqCst);
        Ok(())
    }

    /// Writes `value` into `f`, remembering the first failure (reported by `run`).
    fn w(&mut self, f: Field, value: u64) {
        if let Err(e) = self.load().and_then(|()| write(f, value).map_err(VmxError::from)) {
            if self.failed.is_none() {
                log::error!("vmx: {e}");
                if let VmxError::Instruction(i) = e {
                    self.failed = Some(i);
                }
            }
        }
    }

    fn r(&self, f: Field) -> u64 {
        self.load().ok().and_then(|()| read(f).ok()).unwrap_or(0)
    }

    /// The controls, bitmaps, EPT and VPID: what stays the same for the vCPU's life.
    fn setup(&mut self, c: &Caps) -> Result<(), VmxError> {
        use vmcs::*;
        self.w(PIN_BASED_CONTROLS, u64::from(c.pin));
        if c.pin & PIN_PREEMPTION_TIMER != 0 {
            // The timer counts down at the TSC rate divided by 2^IA32_VMX_MISC[4:0].
            let rate = rdmsr(MSR_VMX_MISC) & 0x1F;
            self.w(PREEMPTION_TIMER_VALUE, (SLICE_TSC >> rate).max(1));
        }
        self.w(PRIMARY_CONTROLS, u64::from(c.primary));
        self.w(SECONDARY_CONTROLS, u64::from(c.secondary));
        self.w(EXIT_CONTROLS, u64::from(c.exit));
        self.w(ENTRY_CONTROLS, u64::from(c.entry));
        self.w(EXCEPTION_BITMAP, u64::from(super::svm::ALL_EXCEPTIONS));
        self.w(PAGE_FAULT_ERROR_CODE_MASK, 0);
        self.w(PAGE_FAULT_ERROR_CODE_MATCH, 0);
        self.w(CR3_TARGET_COUNT, 0);
        self.w(EXIT_MSR_STORE_COUNT, 0);
        self.w(EXIT_MSR_LOAD_COUNT, 0);
        self.w(ENTRY_MSR_LOAD_COUNT, 0);
        self.w(ENTRY_INTERRUPTION_INFO, 0);
        self.w(IO_BITMAP_A, self.io_bitmaps);
        self.w(IO_BITMAP_B, self.io_bitmaps + 4096);
        self.w(MSR_BITMAP, self.msr_bitmap);
        self.w(TSC_OFFSET, 0);
        self.w(EPT_POINTER, self.eptp);
        self.w(VPID, u64::from(self.vpid));
        self.w(VMCS_LINK_POINTER, u64::MAX);
        // CR4.VMXE must be set while the guest runs (CR4_FIXED0) but is not the guest's:
        // it is owned by the host (mask) and reads as 0 (shadow).
        self.w(CR4_GUEST_HOST_MASK, CR4_VMXE);
        self.w(CR4_READ_SHADOW, 0);
        self.w(CR0_GUEST_HOST_MASK, 0);
        self.w(CR0_READ_SHADOW, 0);
        match self.failed {
            Some(e) => Err(VmxError::Instruction(e)),
            None => Ok(()),
        }
    }

    fn segment(
        &mut self,
        sel: Field,
        base: Field,
        limit: Field,
        access: Field,
        s: (u16, u64, u32, u64),
    ) {
        self.w(sel, u64::from(s.0));
        self.w(base, s.1);
        self.w(limit, u64::from(s.2));
        self.w(access, s.3);
    }

    /// CPUID: the filtered view of `intercept::guest_cpuid`.
    fn emulate_cpuid(&mut self, next_rip: u64) -> VmExit {
        let Ok(facts) = world::host_facts() else {
            return VmExit::Refused { instruction: "CPUID", rip: self.r(vmcs::GUEST_RIP) };
        };
        let guest_cr4 = self.r(vmcs::GUEST_CR4) & !CR4_VMXE;
        let r = intercept::guest_cpuid(
            self.gprs.rax as u32,
            self.gprs.rcx as u32,
            guest_cr4,
            facts.mask,
            facts.area_size as u32,
        );
        self.gprs.rax = u64::from(r[0]);
        self.gprs.rbx = u64::from(r[1]);
        self.gprs.rcx = u64::from(r[2]);
        self.gprs.rdx = u64::from(r[3]);
        self.w(vmcs::GUEST_RIP, next_rip);
        VmExit::Emulated { instruction: "CPUID" }
    }

    /// XSETBV: as the SVM backend's (`intercept::xcr0_allowed`, CPL 0, CR4.OSXSAVE).
    fn emulate_xsetbv(&mut self, rip: u64, next_rip: u64) -> VmExit {
        let refused =
            VmExit::Refused { instruction: "XSETBV of a value the host does not allow", rip };
        let Ok(facts) = world::host_facts() else {
            return refused;
        };
        let value = (self.gprs.rdx & 0xFFFF_FFFF) << 32 | (self.gprs.rax & 0xFFFF_FFFF);
        // CPL is the SS access rights' DPL (bits 6:5).
        let cpl = (self.r(vmcs::GUEST_SS_ACCESS) >> 5) & 3;
        let osxsave = self.r(vmcs::GUEST_CR4) & 1 << 18 != 0;
        if self.gprs.rcx as u32 != 0 || cpl != 0 || !osxsave {
            return refused;
        }
        if let Err(why) = intercept::xcr0_allowed(value, facts.mask) {
            log::warn!("vmx: guest XSETBV {value:#x} refused: {why}");
            return refused;
        }
        self.world.xcr0 = value;
        self.w(vmcs::GUEST_RIP, next_rip);
        VmExit::Emulated { instruction: "XSETBV" }
    }

    /// Reads the exit, decodes it (`exit::decode`) and does what it asks of the backend.
    fn decode(&mut self) -> VmExit {
        use vmcs::*;
        let info = ExitInfo {
            reason: self.r(EXIT_REASON) as u32,
            qualification: self.r(EXIT_QUALIFICATION),
            interruption: self.r(EXIT_INTERRUPTION_INFO) as u32,
            error_code: self.r(EXIT_INTERRUPTION_ERROR_CODE) as u32,
            instruction_length: self.r(EXIT_INSTRUCTION_LENGTH) as u32,
            rip: self.r(GUEST_RIP),
            gpa: self.r(GUEST_PHYSICAL_ADDRESS),
        };
        let next_rip = info.rip.wrapping_add(u64::from(info.instruction_length));
        if info.reason & 0xFFFF == 7 {
            // The interrupt window opened: stop asking for it (`inject` re-arms).
            self.w(PRIMARY_CONTROLS, self.r(PRIMARY_CONTROLS) & !u64::from(PROC_INTERRUPT_WINDOW));
        }
        match exit::decode(&info) {
            Decoded::Exit(VmExit::InvalidState) => {
                log::warn!(
                    "vmx: VM entry failed: exit reason {:#x}, qualification {:#x}",
                    info.reason,
                    info.qualification
                );
                VmExit::InvalidState
            }
            Decoded::Exit(e) => e,
            Decoded::Cpuid => self.emulate_cpuid(next_rip),
            Decoded::Xsetbv => self.emulate_xsetbv(info.rip, next_rip),
            Decoded::CacheFlush { invd } => {
                // SAFETY: WBINVD writes back and invalidates the caches; it changes no
                // memory contents, only costs time (bounded by the run's exit budget).
                unsafe { asm!("wbinvd", options(nostack)) };
                self.w(GUEST_RIP, next_rip);
                VmExit::Emulated { instruction: if invd { "INVD" } else { "WBINVD" } }
            }
            Decoded::MachineCheck => {
                // SAFETY: INT 18 runs the host's #MC handler (IDT vector 18, on its IST
                // stack); it returns or stops the machine, as for a host machine check.
                unsafe { asm!("int 18", options(nostack)) };
                VmExit::MachineCheck { rip: info.rip }
            }
        }
    }

    /// Injects the pending virtual interrupt when the guest can take it now, else asks
    /// for an exit when it can (interrupt-window exiting).
    fn deliver_pending(&mut self) {
        let Some(vector) = self.pending else { return };
        let rflags_if = self.r(vmcs::GUEST_RFLAGS) & (1 << 9) != 0;
        let blocked = self.r(vmcs::GUEST_INTERRUPTIBILITY) & 3 != 0;
        if rflags_if && !blocked {
            // Valid (31), type external interrupt (0), the vector.
            self.w(vmcs::ENTRY_INTERRUPTION_INFO, 1 << 31 | u64::from(vector));
            self.pending = None;
        } else {
            let p = self.r(vmcs::PRIMARY_CONTROLS);
            self.w(vmcs::PRIMARY_CONTROLS, p | u64::from(PROC_INTERRUPT_WINDOW));
        }
    }
}

/// # Safety
/// VMX operation is on and `vmcs` is a VMCS frame the caller owns.
unsafe fn vmx_op_clear(vmcs: u64) -> bool {
    let failed: u8;
    // SAFETY: per the caller.
    unsafe {
        asm!("vmclear [{}]", "setna {}", in(reg) &vmcs, out(reg_byte) failed, options(nostack))
    };
    failed != 0
}

/// # Safety
/// As for [`vmx_op_clear`], and the VMCS was initialized by VMCLEAR.
unsafe fn vmx_op_ptrld(vmcs: u64) -> bool {
    let failed: u8;
    // SAFETY: per the caller.
    unsafe {
        asm!("vmptrld [{}]", "setna {}", in(reg) &vmcs, out(reg_byte) failed, options(nostack))
    };
    failed != 0
}

impl VcpuBackend for VmxVcpu {
    fn name(&self) -> &'static str {
        "VMX"
    }

    fn enter_long_mode(&mut self, e: &EntryState) {
        use vmcs::*;
        let data = (0x10, 0, u32::MAX, DATA);
        self.segment(GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_ACCESS, data);
        self.segment(GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_ACCESS, data);
        self.segment(GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_ACCESS, data);
        self.segment(
            GUEST_CS_SELECTOR,
            GUEST_CS_BASE,
            GUEST_CS_LIMIT,
            GUEST_CS_ACCESS,
            (0x08, 0, u32::MAX, CODE64),
        );
        // The clean start `world.rs` describes for SVM: null FS/GS at base 0, TR a busy
        // 64-bit TSS at 0, LDTR unusable, no GDT or IDT, SYSENTER 0, KERNEL_GS_BASE 0.
        let null = (0, 0, 0, UNUSABLE);
        self.segment(GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_ACCESS, null);
        self.segment(GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_ACCESS, null);
        self.segment(
            GUEST_LDTR_SELECTOR,
            GUEST_LDTR_BASE,
            GUEST_LDTR_LIMIT,
            GUEST_LDTR_ACCESS,
            null,
        );
        self.segment(
            GUEST_TR_SELECTOR,
            GUEST_TR_BASE,
            GUEST_TR_LIMIT,
            GUEST_TR_ACCESS,
            (0, 0, 0xFFFF, TSS64_BUSY),
        );
        for (base, limit) in
            [(GUEST_GDTR_BASE, GUEST_GDTR_LIMIT), (GUEST_IDTR_BASE, GUEST_IDTR_LIMIT)]
        {
            self.w(base, 0);
            self.w(limit, 0);
        }
        self.w(GUEST_SYSENTER_CS, 0);
        self.w(GUEST_SYSENTER_ESP, 0);
        self.w(GUEST_SYSENTER_EIP, 0);
        self.kernel_gs_base = 0;
        self.world.reset();
        // EFER: LME | LMA. CR4: PAE, and VMXE (host-owned, reads as 0). CR0: PE, MP, ET,
        // NE, WP, PG: the SVM backend's entry state.
        self.w(GUEST_IA32_EFER, 1 << 8 | 1 << 10);
        self.w(GUEST_CR4, 1 << 5 | CR4_VMXE);
        self.w(GUEST_CR3, e.cr3);
        self.w(GUEST_CR0, 0x8001_0033);
        self.w(GUEST_DR7, 0x400);
        self.w(GUEST_IA32_DEBUGCTL, 0);
        // RFLAGS.IF = 1: with external-interrupt exiting every host interrupt exits
        // whatever the guest's IF, which governs only the virtual interrupts the host
        // injects (none before a guest with a device has set up its IDT). IF = 0 would
        // be equivalent on hardware, but Bochs 2.7 re-evaluates interrupt masking only
        // when RFLAGS.IF changes, so a guest entered with IF = 0 from a host with IF = 0
        // never exits for the host's timer (docs/bochs.md).
        self.w(GUEST_RFLAGS, 0x202);
        self.w(GUEST_RIP, e.rip);
        self.w(GUEST_RSP, e.rsp);
        self.w(GUEST_IA32_PAT, 0x0007_0406_0007_0406);
        self.w(GUEST_INTERRUPTIBILITY, 0);
        self.w(GUEST_ACTIVITY_STATE, 0);
        self.w(GUEST_PENDING_DEBUG, 0);
        self.w(ENTRY_INTERRUPTION_INFO, 0);
        self.pending = None;
        self.gprs = GuestGprs { rdi: e.rdi, ..GuestGprs::default() };
        self.flush_vpid = true;
    }

    fn set_exception_intercepts(&mut self, vectors: u32) {
        self.w(vmcs::EXCEPTION_BITMAP, u64::from(vectors | super::svm::forced_exceptions()));
    }

    fn run(&mut self) -> VmExit {
        if let Some(e) = self.failed {
            log::error!("vmx: not entering: VMWRITE of {} failed (error {})", e.field, e.error);
            return VmExit::InvalidState;
        }
        if self.load().is_err() {
            return VmExit::InvalidState;
        }
        self.deliver_pending();
        x86_64::instructions::interrupts::disable();
        let h = host::HostState::capture();
        h.write_to_vmcs(|f, v| self.w(f, v));
        // The nested tables may have changed since the last entry (a BAR mapped): drop
        // every cached EPT translation of this partition; likewise this VPID's guest TLB
        // entries when the vCPU is new or restarted. Cheap under emulation, and correct.
        let caps = caps().ok();
        let ept = caps.map_or(0, |c| c.ept_vpid);
        host::invept(self.eptp, ept & EPT_INVEPT_SINGLE != 0);
        if self.flush_vpid {
            host::invvpid(self.vpid, ept & CAP_INVVPID_SINGLE != 0);
            self.flush_vpid = false;
        }
        let host = self.world.enter();
        let host_kgs = host::swap_kernel_gs_base(self.kernel_gs_base);
        // SAFETY: VMX operation is on and this vCPU's VMCS is current (`load`), filled
        // by `new`/`enter_long_mode` and the host state just written; the routine writes
        // HOST_RSP/HOST_RIP itself, restores every callee-saved register and the stack,
        // and returns with interrupts still off.
        let status = unsafe { partition_vmx_run(&mut self.gprs, u64::from(self.launched)) };
        self.kernel_gs_base = host::swap_kernel_gs_base(host_kgs);
        h.restore_descriptor_tables();
        self.world.leave(host);
        x86_64::instructions::interrupts::enable();
        if status != 0 {
            log::warn!(
                "vmx: VM{} failed: VM-instruction error {}",
                if self.launched { "RESUME" } else { "LAUNCH" },
                vmcs::instruction_error()
            );
            return VmExit::InvalidState;
        }
        self.launched = true;
        self.decode()
    }

    fn reg(&self, r: Reg) -> u64 {
        match r {
            Reg::Rax => self.gprs.rax,
            Reg::Rcx => self.gprs.rcx,
            Reg::Rsi => self.gprs.rsi,
            Reg::Rip => self.r(vmcs::GUEST_RIP),
        }
    }

    fn set_rip(&mut self, rip: u64) {
        self.w(vmcs::GUEST_RIP, rip);
    }

    fn set_rax(&mut self, value: u64) {
        self.gprs.rax = value;
    }

    fn inject_interrupt(&mut self, vector: u8) {
        self.pending = Some(vector);
    }

    fn interrupt_waiting(&self) -> bool {
        self.pending.is_some() || self.r(vmcs::ENTRY_INTERRUPTION_INFO) & (1 << 31) != 0
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        // SAFETY: the VMCS is this vCPU's; VMCLEAR writes its cached state back and makes
        // it inactive and not current, so the frame can be reused.
        let _ = unsafe { vmx_op_clear(self.vmcs) };
        let _ = CURRENT.compare_exchange(self.vmcs, 0, Ordering::SeqCst, Ordering::SeqCst);
        // The VMCS holds guest register values: zero it with the bitmaps before reuse.
        frames::zero(self.vmcs, 4096);
        frames::free(self.vmcs);
        frames::free_contiguous(self.io_bitmaps, 2);
        frames::free(self.msr_bitmap);
        self.gprs = GuestGprs::default();
    }
}
