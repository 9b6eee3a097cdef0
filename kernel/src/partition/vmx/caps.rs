//! Entering VMX operation once (IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits, VMXON) and
//! what the CPU offers: every control adjusted through the capability MSRs (the TRUE ones
//! when IA32_VMX_BASIC says they exist), and the EPT/VPID capabilities the backend needs.

use super::super::world;
use super::vmcs::VmFail;
use crate::mem::frames;
use core::arch::asm;
use core::fmt;
use x86_64::registers::model_specific::Msr;

pub(super) const MSR_FEATURE_CONTROL: u32 = 0x3A;
pub(super) const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
pub(super) const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
pub(super) const MSR_VMX_BASIC: u32 = 0x480;
pub(super) const MSR_VMX_PINBASED: u32 = 0x481;
pub(super) const MSR_VMX_PROCBASED: u32 = 0x482;
pub(super) const MSR_VMX_EXIT: u32 = 0x483;
pub(super) const MSR_VMX_ENTRY: u32 = 0x484;
pub(super) const MSR_VMX_CR0_FIXED0: u32 = 0x486;
pub(super) const MSR_VMX_CR0_FIXED1: u32 = 0x487;
pub(super) const MSR_VMX_CR4_FIXED0: u32 = 0x488;
pub(super) const MSR_VMX_CR4_FIXED1: u32 = 0x489;
pub(super) const MSR_VMX_PROCBASED2: u32 = 0x48B;
pub(super) const MSR_VMX_EPT_VPID_CAP: u32 = 0x48C;
pub(super) const MSR_VMX_TRUE_PINBASED: u32 = 0x48D;
pub(super) const MSR_VMX_TRUE_PROCBASED: u32 = 0x48E;
pub(super) const MSR_VMX_TRUE_EXIT: u32 = 0x48F;
pub(super) const MSR_VMX_TRUE_ENTRY: u32 = 0x490;
/// IA32_VMX_BASIC bit 55: the TRUE control MSRs exist.
pub(super) const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
pub(super) const CR4_VMXE: u64 = 1 << 13;

// Pin-based controls.
/// Host interrupts end the guest's slice (the host timer bounds every run).
pub(super) const PIN_EXTERNAL_INTERRUPT: u32 = 1 << 0;
/// NMIs are the host's.
pub(super) const PIN_NMI: u32 = 1 << 3;
/// The VMX-preemption timer ends a slice after [`SLICE_TSC`] cycles even when no host
/// interrupt does (Bochs 2.7 never delivers the host's interrupt to a guest entered with
/// RFLAGS.IF = 0 from a host with IF = 0: see docs/bochs.md). Used when the CPU has it.
pub(super) const PIN_PREEMPTION_TIMER: u32 = 1 << 6;
/// The longest slice in TSC cycles when the preemption timer is active (a few ms at
/// GHz rates; about one host timer tick under Bochs).
pub(super) const SLICE_TSC: u64 = 4_000_000;
pub(super) const MSR_VMX_MISC: u32 = 0x485;
// Primary processor-based controls.
/// A guest with interrupts enabled exits so a pending virtual interrupt can be injected.
pub(super) const PROC_INTERRUPT_WINDOW: u32 = 1 << 2;
/// HLT: the guest is done with the CPU; the run ends.
pub(super) const PROC_HLT: u32 = 1 << 7;
/// MWAIT: CPUID says there is none; refused.
pub(super) const PROC_MWAIT: u32 = 1 << 10;
/// RDPMC: the performance counters are the host's; refused.
pub(super) const PROC_RDPMC: u32 = 1 << 11;
/// I/O through the bitmaps (all ones: only the hypercall port is served).
pub(super) const PROC_IO_BITMAPS: u32 = 1 << 25;
/// MSRs through the bitmaps (all ones: none is emulated; any access stops the guest).
pub(super) const PROC_MSR_BITMAPS: u32 = 1 << 28;
/// MONITOR: refused.
pub(super) const PROC_MONITOR: u32 = 1 << 29;
pub(super) const PROC_SECONDARY: u32 = 1 << 31;
// Secondary controls.
pub(super) const SECONDARY_EPT: u32 = 1 << 1;
/// RDTSCP as on bare metal (not intercepted, like RDTSC: see `intercept.rs`).
pub(super) const SECONDARY_RDTSCP: u32 = 1 << 3;
pub(super) const SECONDARY_VPID: u32 = 1 << 5;
/// WBINVD: executed by the host on the guest's behalf (emulated).
pub(super) const SECONDARY_WBINVD: u32 = 1 << 6;
/// Guest real mode and unpaged protected mode (not needed: guests start in long mode).
pub(super) const SECONDARY_UNRESTRICTED_GUEST: u32 = 1 << 7;
// VM-exit controls.
pub(super) const EXIT_SAVE_DEBUG: u32 = 1 << 2;
pub(super) const EXIT_HOST_64BIT: u32 = 1 << 9;
pub(super) const EXIT_SAVE_PAT: u32 = 1 << 18;
pub(super) const EXIT_LOAD_PAT: u32 = 1 << 19;
pub(super) const EXIT_SAVE_EFER: u32 = 1 << 20;
pub(super) const EXIT_LOAD_EFER: u32 = 1 << 21;
// VM-entry controls.
pub(super) const ENTRY_LOAD_DEBUG: u32 = 1 << 2;
pub(super) const ENTRY_64BIT_GUEST: u32 = 1 << 9;
pub(super) const ENTRY_LOAD_PAT: u32 = 1 << 14;
pub(super) const ENTRY_LOAD_EFER: u32 = 1 << 15;
// IA32_VMX_EPT_VPID_CAP.
pub(super) const EPT_WALK_4: u64 = 1 << 6;
pub(super) const EPT_WB: u64 = 1 << 14;
pub(super) const EPT_2M: u64 = 1 << 16;
pub(super) const EPT_1G: u64 = 1 << 17;
pub(super) const EPT_INVEPT: u64 = 1 << 20;
pub(super) const EPT_INVEPT_SINGLE: u64 = 1 << 25;
pub(super) const EPT_INVEPT_ALL: u64 = 1 << 26;
pub(super) const CAP_INVVPID: u64 = 1 << 32;
pub(super) const CAP_INVVPID_SINGLE: u64 = 1 << 41;
pub(super) const CAP_INVVPID_ALL: u64 = 1 << 42;

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
    /// Every VPID (65535) belongs to a live vCPU.
    NoVpid,
    /// The world switch's host side (XSAVE) is missing.
    World(super::super::svm::SvmError),
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
            VmxError::NoVpid => f.write_str("every VPID is in use by a live vCPU"),
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
pub(super) struct Caps {
    pub(super) revision: u32,
    pub(super) pin: u32,
    pub(super) primary: u32,
    pub(super) secondary: u32,
    pub(super) exit: u32,
    pub(super) entry: u32,
    pub(super) ept_vpid: u64,
}

static ENABLED: spin::Once<Result<Caps, VmxError>> = spin::Once::new();

pub(super) fn rdmsr(msr: u32) -> u64 {
    // SAFETY: only called for the VMX capability MSRs and IA32_FEATURE_CONTROL, which
    // exist on every CPU that reports VMX (checked first by `enable`).
    unsafe { Msr::new(msr).read() }
}

/// A control word from a capability MSR: bits that must be 1 set, `wanted` added, and
/// every bit of `needed` checked against what may be 1.
pub(super) fn adjust(
    msr: u32,
    wanted: u32,
    needed: u32,
    what: &'static str,
) -> Result<u32, VmxError> {
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

pub(super) fn caps() -> Result<Caps, VmxError> {
    *ENABLED.call_once(enter_vmx_operation)
}

pub(super) fn enter_vmx_operation() -> Result<Caps, VmxError> {
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
