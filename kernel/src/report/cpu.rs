//! The processor in words for the report: vendor, brand, family/model/stepping, and what
//! partitions need (AMD SVM with nested paging, or Intel VMX with EPT),
//! including whether firmware switched it off.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::x86_64::{__cpuid, __cpuid_count, CpuidResult};
use x86_64::registers::model_specific::Msr;

fn cpuid(leaf: u32) -> CpuidResult {
    __cpuid_count(leaf, 0)
}

fn max_extended() -> u32 {
    __cpuid(0x8000_0000).eax
}

fn vendor() -> String {
    let r = cpuid(0);
    let mut b = Vec::new();
    for w in [r.ebx, r.edx, r.ecx] {
        b.extend_from_slice(&w.to_le_bytes());
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn brand() -> Option<String> {
    if max_extended() < 0x8000_0004 {
        return None;
    }
    let mut b = Vec::new();
    for leaf in 0x8000_0002..=0x8000_0004u32 {
        let r = cpuid(leaf);
        for w in [r.eax, r.ebx, r.ecx, r.edx] {
            b.extend_from_slice(&w.to_le_bytes());
        }
    }
    let s: String = String::from_utf8_lossy(&b).trim_matches(['\0', ' ']).into();
    (!s.is_empty()).then_some(s)
}

fn rdmsr(index: u32) -> u64 {
    // SAFETY: callers read only MSRs whose CPUID feature bit they checked first; reading
    // them has no side effect.
    unsafe { Msr::new(index).read() }
}

/// What partitions need from this processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Virtualization {
    /// AMD SVM present.
    pub svm: bool,
    /// SVM switched off by firmware (VM_CR.SVMDIS).
    pub svm_disabled: bool,
    /// AMD nested paging.
    pub npt: bool,
    /// Intel VMX present.
    pub vmx: bool,
    /// VMX locked off by firmware (IA32_FEATURE_CONTROL locked without VMX outside SMX).
    pub vmx_disabled: bool,
    /// Intel EPT (secondary controls allowed and EPT allowed).
    pub ept: bool,
}

/// Reads the virtualization features (CPUID and, where CPUID says they exist, MSRs).
pub fn virtualization() -> Virtualization {
    let ext = max_extended();
    let svm = ext >= 0x8000_0001 && cpuid(0x8000_0001).ecx & (1 << 2) != 0;
    let npt = svm && ext >= 0x8000_000A && cpuid(0x8000_000A).edx & 1 != 0;
    // VM_CR (0xC001_0114) bit 4 SVMDIS.
    let svm_disabled = svm && rdmsr(0xC001_0114) & (1 << 4) != 0;
    let vmx = cpuid(1).ecx & (1 << 5) != 0;
    // IA32_FEATURE_CONTROL (0x3A): bit 0 lock, bit 2 VMX outside SMX.
    let vmx_disabled = vmx && {
        let fc = rdmsr(0x3A);
        fc & 1 != 0 && fc & (1 << 2) == 0
    };
    // IA32_VMX_PROCBASED_CTLS (0x482) allowed-1 bit 31 = secondary controls; then
    // IA32_VMX_PROCBASED_CTLS2 (0x48B) allowed-1 bit 1 = EPT.
    let ept = vmx && rdmsr(0x482) & (1 << 63) != 0 && rdmsr(0x48B) & (1 << 33) != 0;
    Virtualization { svm, svm_disabled, npt, vmx, vmx_disabled, ept }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The displayed family and model (CPUID 1, with the extended fields where they count),
/// as errata lists name processors.
pub fn family_model() -> (u32, u32) {
    let sig = cpuid(1).eax;
    let base_family = (sig >> 8) & 0xF;
    let family = if base_family == 0xF { base_family + ((sig >> 20) & 0xFF) } else { base_family };
    let model = if base_family == 0x6 || base_family == 0xF {
        ((sig >> 4) & 0xF) | ((sig >> 12) & 0xF0)
    } else {
        (sig >> 4) & 0xF
    };
    (family, model)
}

/// The processor section of the report, one fact per line.
pub fn lines(cpus: usize) -> Vec<String> {
    let sig = cpuid(1).eax;
    let (family, model) = family_model();
    let v = virtualization();
    let mut out = Vec::new();
    out.push(format!(
        "cpu: {} \"{}\", family {family:#x} model {model:#x} stepping {}, {cpus} processors (MADT)",
        vendor(),
        brand().unwrap_or_else(|| "no brand string".into()),
        sig & 0xF
    ));
    out.push(format!(
        "cpu: AMD SVM: {}{}, nested paging (NPT): {}",
        yes_no(v.svm),
        if v.svm_disabled { " but disabled by firmware (VM_CR.SVMDIS)" } else { "" },
        yes_no(v.npt)
    ));
    out.push(format!(
        "cpu: Intel VMX: {}{}, EPT: {}",
        yes_no(v.vmx),
        if v.vmx_disabled { " but locked off by firmware (IA32_FEATURE_CONTROL)" } else { "" },
        yes_no(v.ept)
    ));
    out.push(format!(
        "cpu: partitions {} on this processor{}",
        if v.svm && v.npt && !v.svm_disabled { "can run" } else { "cannot run" },
        if v.svm && v.npt && !v.svm_disabled {
            ""
        } else if v.vmx {
            " (they need AMD SVM with nested paging; a VMX backend is not written yet)"
        } else {
            " (they need AMD SVM with nested paging)"
        }
    ));
    out
}
