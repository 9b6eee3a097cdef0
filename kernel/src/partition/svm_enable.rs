//! Enabling AMD SVM on the host once: CPUID (SVM, nested paging), VM_CR.SVMDIS,
//! EFER.SVME, the host save area (VM_HSAVE_PA) and the world switch's host side.

use super::world;
use crate::mem::frames;
use core::fmt;
use x86_64::registers::model_specific::Msr;

/// EFER.
pub(super) const MSR_EFER: u32 = 0xC000_0080;
/// EFER.SVME: the SVM instructions are available (VMRUN also requires it of the guest).
pub(super) const EFER_SVME: u64 = 1 << 12;
const MSR_VM_CR: u32 = 0xC001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
/// CPUID 0x8000_000A EDX: NRIP save (the VMCB's NRIP holds the next RIP on instruction
/// exits).
pub(super) const NRIP_SAVE: u32 = 1 << 3;

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

pub(super) fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
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
        let nrip = if cpuid(0x8000_000A).edx & NRIP_SAVE != 0 {
            "NRIP save"
        } else {
            "no NRIP save: instruction lengths decoded"
        };
        log::info!("svm: enabled (nested paging, {} ASIDs, {nrip})", cpuid(0x8000_000A).ebx);
        Ok(())
    })
}
