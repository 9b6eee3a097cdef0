//! The MSRs a Linux guest may touch, and what each does (vendor-neutral policy; the
//! backend keeps the MSRs that live in its guest-state area, `VcpuBackend::guest_msr`).
//! Every MSR stays intercepted, so no MSR the host relies on can change under a guest
//! (`world.rs`); anything not listed here is refused with #GP, which Linux survives:
//! its probes use `rdmsr_safe`, and a plain `rdmsr` of an unknown MSR prints "unchecked
//! MSR access error" and goes on.
//!
//! | MSR | read | write |
//! | --- | --- | --- |
//! | EFER, PAT, FS/GS/KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_CS/ESP/EIP | the guest's own value in the backend's guest state (EFER without SVME) | checked by the backend, stored there |
//! | TSC (0x10) | the host's TSC (the guest reads it unintercepted anyway) | #GP |
//! | APIC_BASE (0x1B) | 0xFEE00000, enabled, BSP | the same value accepted, anything else #GP |
//! | MTRRcap (0xFE) | 0: no variable or fixed MTRRs, no write-combining ("MTRRs disabled") | #GP |
//! | MTRRdefType (0x2FF), variable and fixed MTRRs | 0 | dropped |
//! | MISC_ENABLE (0x1A0), PATCH_LEVEL (0x8B), MCG_CAP/STATUS/CTL (0x179-0x17B), TSC_AUX, AMD HWCR, SYSCFG | 0 | dropped |
//! | everything else | #GP | #GP |

/// The guest's local APIC base: the architectural default, enabled (bit 11), BSP (bit 8).
pub const APIC_BASE_VALUE: u64 = 0xFEE0_0000 | 1 << 11 | 1 << 8;

/// EFER.
pub const EFER: u32 = 0xC000_0080;
/// IA32_PAT.
pub const PAT: u32 = 0x277;

/// What a guest's RDMSR gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// This value.
    Value(u64),
    /// The host's time-stamp counter.
    Tsc,
    /// The backend's copy of the guest's own MSR.
    Guest,
    /// #GP.
    Fault,
}

/// What a guest's WRMSR does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Accepted and dropped (nothing behind it changes).
    Drop,
    /// Stored in the backend's guest state (which may still refuse the value).
    Guest,
    /// #GP.
    Fault,
}

/// The MSRs the backend keeps per guest: EFER, PAT, the segment bases and the SYSCALL
/// and SYSENTER MSRs.
pub fn in_guest_state(msr: u32) -> bool {
    matches!(
        msr,
        EFER | PAT
            | 0x174..=0x176
            | 0xC000_0081..=0xC000_0084
            | 0xC000_0100..=0xC000_0102
    )
}

fn is_mtrr(msr: u32) -> bool {
    matches!(msr, 0x200..=0x20F | 0x250 | 0x258 | 0x259 | 0x268..=0x26F | 0x2FF)
}

/// Quiet MSRs: read 0, writes dropped.
fn is_zero(msr: u32) -> bool {
    matches!(msr, 0x8B | 0x179..=0x17B | 0x1A0 | 0xC000_0103 | 0xC001_0010 | 0xC001_0015)
}

/// RDMSR `msr`.
pub fn read(msr: u32) -> Read {
    match msr {
        _ if in_guest_state(msr) => Read::Guest,
        0x10 => Read::Tsc,
        0x1B => Read::Value(APIC_BASE_VALUE),
        0xFE => Read::Value(0),
        _ if is_mtrr(msr) || is_zero(msr) => Read::Value(0),
        _ => Read::Fault,
    }
}

/// WRMSR `value` to `msr`.
pub fn write(msr: u32, value: u64) -> Write {
    match msr {
        _ if in_guest_state(msr) => Write::Guest,
        0x1B if value == APIC_BASE_VALUE => Write::Drop,
        _ if is_mtrr(msr) || is_zero(msr) => Write::Drop,
        _ => Write::Fault,
    }
}

/// Whether `value` is a valid PAT: every byte a memory type (UC, WC, WT, WP, WB, UC-).
pub fn pat_valid(value: u64) -> bool {
    value.to_le_bytes().iter().all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

/// EFER.SCE: SYSCALL/SYSRET enabled.
pub const EFER_SCE: u64 = 1 << 0;

/// A guest's WRMSR of EFER, the same on every backend: SCE, LME, LMA and NXE may be
/// written (SCE because both backends switch the SYSCALL MSRs: SVM with VMLOAD/VMSAVE,
/// VMX in `VmxVcpu::run`); LME may not change (the guest starts and stays in long mode);
/// LMA is the processor's and keeps its current value. `Some(new EFER)` to store (the
/// backend adds what it needs, SVME on SVM), `None` for #GP.
pub fn efer_write(current: u64, value: u64) -> Option<u64> {
    const LME: u64 = 1 << 8;
    const LMA: u64 = 1 << 10;
    const NXE: u64 = 1 << 11;
    let writable = EFER_SCE | LME | LMA | NXE;
    if value & !writable != 0 || (value ^ current) & LME != 0 {
        return None;
    }
    Some(value & !(LME | LMA) | current & (LME | LMA))
}

/// Whether `value` is a canonical 48-bit address (what a segment base or LSTAR must be).
pub fn canonical(value: u64) -> bool {
    let top = value >> 47;
    top == 0 || top == 0x1_FFFF
}
