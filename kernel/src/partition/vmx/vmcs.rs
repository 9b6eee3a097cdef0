//! VMCS fields, declared once: each has its name, its 32-bit encoding (SDM vol. 3D,
//! appendix B) and its width, and `vmread`/`vmwrite` go through these declarations only.
//! The width is part of the encoding (bits 14:13: 0 = 16-bit, 1 = 64-bit, 2 = 32-bit,
//! 3 = natural width); [`Field::new`] checks that the declared width agrees with it, so a
//! field declared with the wrong width does not compile.

use core::arch::asm;

/// A field's width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// 16 bits.
    W16,
    /// 64 bits (full field).
    W64,
    /// 32 bits.
    W32,
    /// Natural width (64 bits on a 64-bit host).
    Natural,
}

/// One VMCS field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Its SDM name, for logs.
    pub name: &'static str,
    /// The encoding `vmread`/`vmwrite` take.
    pub encoding: u32,
    /// Its width.
    pub width: Width,
}

impl Field {
    /// Declares a field; panics at compile time (these are all `const`) when `width`
    /// disagrees with the encoding's width bits or the encoding is a high-half access.
    pub const fn new(name: &'static str, encoding: u32, width: Width) -> Field {
        let bits = (encoding >> 13) & 3;
        let expected = match width {
            Width::W16 => 0,
            Width::W64 => 1,
            Width::W32 => 2,
            Width::Natural => 3,
        };
        assert!(bits == expected, "VMCS field width disagrees with its encoding");
        assert!(encoding & 1 == 0, "high-half accesses are not declared");
        Field { name, encoding, width }
    }

    /// The value's mask for this width.
    pub const fn mask(&self) -> u64 {
        match self.width {
            Width::W16 => 0xFFFF,
            Width::W32 => 0xFFFF_FFFF,
            Width::W64 | Width::Natural => u64::MAX,
        }
    }
}

macro_rules! fields {
    ($($(#[$doc:meta])* $name:ident = $enc:literal, $w:ident;)*) => {
        $( $(#[$doc])* pub const $name: Field = Field::new(stringify!($name), $enc, Width::$w); )*
    };
}

fields! {
    /// Virtual-processor identifier.
    VPID = 0x0000, W16;
    /// Guest ES selector.
    GUEST_ES_SELECTOR = 0x0800, W16;
    /// Guest CS selector.
    GUEST_CS_SELECTOR = 0x0802, W16;
    /// Guest SS selector.
    GUEST_SS_SELECTOR = 0x0804, W16;
    /// Guest DS selector.
    GUEST_DS_SELECTOR = 0x0806, W16;
    /// Guest FS selector.
    GUEST_FS_SELECTOR = 0x0808, W16;
    /// Guest GS selector.
    GUEST_GS_SELECTOR = 0x080A, W16;
    /// Guest LDTR selector.
    GUEST_LDTR_SELECTOR = 0x080C, W16;
    /// Guest TR selector.
    GUEST_TR_SELECTOR = 0x080E, W16;
    /// Host ES selector.
    HOST_ES_SELECTOR = 0x0C00, W16;
    /// Host CS selector.
    HOST_CS_SELECTOR = 0x0C02, W16;
    /// Host SS selector.
    HOST_SS_SELECTOR = 0x0C04, W16;
    /// Host DS selector.
    HOST_DS_SELECTOR = 0x0C06, W16;
    /// Host FS selector.
    HOST_FS_SELECTOR = 0x0C08, W16;
    /// Host GS selector.
    HOST_GS_SELECTOR = 0x0C0A, W16;
    /// Host TR selector.
    HOST_TR_SELECTOR = 0x0C0C, W16;
    /// I/O bitmap A (ports 0-0x7FFF).
    IO_BITMAP_A = 0x2000, W64;
    /// I/O bitmap B (ports 0x8000-0xFFFF).
    IO_BITMAP_B = 0x2002, W64;
    /// MSR bitmaps.
    MSR_BITMAP = 0x2004, W64;
    /// TSC offset.
    TSC_OFFSET = 0x2010, W64;
    /// EPT pointer.
    EPT_POINTER = 0x201A, W64;
    /// Guest-physical address of an EPT violation or misconfiguration.
    GUEST_PHYSICAL_ADDRESS = 0x2400, W64;
    /// VMCS link pointer (all ones: no shadow VMCS).
    VMCS_LINK_POINTER = 0x2800, W64;
    /// Guest IA32_DEBUGCTL.
    GUEST_IA32_DEBUGCTL = 0x2802, W64;
    /// Guest IA32_PAT.
    GUEST_IA32_PAT = 0x2804, W64;
    /// Guest IA32_EFER.
    GUEST_IA32_EFER = 0x2806, W64;
    /// Host IA32_PAT.
    HOST_IA32_PAT = 0x2C00, W64;
    /// Host IA32_EFER.
    HOST_IA32_EFER = 0x2C02, W64;
    /// Pin-based VM-execution controls.
    PIN_BASED_CONTROLS = 0x4000, W32;
    /// Primary processor-based VM-execution controls.
    PRIMARY_CONTROLS = 0x4002, W32;
    /// Exception bitmap.
    EXCEPTION_BITMAP = 0x4004, W32;
    /// Page-fault error-code mask.
    PAGE_FAULT_ERROR_CODE_MASK = 0x4006, W32;
    /// Page-fault error-code match.
    PAGE_FAULT_ERROR_CODE_MATCH = 0x4008, W32;
    /// CR3-target count.
    CR3_TARGET_COUNT = 0x400A, W32;
    /// VM-exit controls.
    EXIT_CONTROLS = 0x400C, W32;
    /// VM-exit MSR-store count.
    EXIT_MSR_STORE_COUNT = 0x400E, W32;
    /// VM-exit MSR-load count.
    EXIT_MSR_LOAD_COUNT = 0x4010, W32;
    /// VM-entry controls.
    ENTRY_CONTROLS = 0x4012, W32;
    /// VM-entry MSR-load count.
    ENTRY_MSR_LOAD_COUNT = 0x4014, W32;
    /// VM-entry interruption-information field (event injection).
    ENTRY_INTERRUPTION_INFO = 0x4016, W32;
    /// VM-entry exception error code.
    ENTRY_EXCEPTION_ERROR_CODE = 0x4018, W32;
    /// Secondary processor-based VM-execution controls.
    SECONDARY_CONTROLS = 0x401E, W32;
    /// VM-instruction error (after a VMfailValid).
    VM_INSTRUCTION_ERROR = 0x4400, W32;
    /// Exit reason.
    EXIT_REASON = 0x4402, W32;
    /// VM-exit interruption information.
    EXIT_INTERRUPTION_INFO = 0x4404, W32;
    /// VM-exit interruption error code.
    EXIT_INTERRUPTION_ERROR_CODE = 0x4406, W32;
    /// IDT-vectoring information (the exit interrupted an event's delivery).
    IDT_VECTORING_INFO = 0x4408, W32;
    /// IDT-vectoring error code.
    IDT_VECTORING_ERROR_CODE = 0x440A, W32;
    /// VM-exit instruction length.
    EXIT_INSTRUCTION_LENGTH = 0x440C, W32;
    /// Guest ES limit.
    GUEST_ES_LIMIT = 0x4800, W32;
    /// Guest CS limit.
    GUEST_CS_LIMIT = 0x4802, W32;
    /// Guest SS limit.
    GUEST_SS_LIMIT = 0x4804, W32;
    /// Guest DS limit.
    GUEST_DS_LIMIT = 0x4806, W32;
    /// Guest FS limit.
    GUEST_FS_LIMIT = 0x4808, W32;
    /// Guest GS limit.
    GUEST_GS_LIMIT = 0x480A, W32;
    /// Guest LDTR limit.
    GUEST_LDTR_LIMIT = 0x480C, W32;
    /// Guest TR limit.
    GUEST_TR_LIMIT = 0x480E, W32;
    /// Guest GDTR limit.
    GUEST_GDTR_LIMIT = 0x4810, W32;
    /// Guest IDTR limit.
    GUEST_IDTR_LIMIT = 0x4812, W32;
    /// Guest ES access rights.
    GUEST_ES_ACCESS = 0x4814, W32;
    /// Guest CS access rights.
    GUEST_CS_ACCESS = 0x4816, W32;
    /// Guest SS access rights.
    GUEST_SS_ACCESS = 0x4818, W32;
    /// Guest DS access rights.
    GUEST_DS_ACCESS = 0x481A, W32;
    /// Guest FS access rights.
    GUEST_FS_ACCESS = 0x481C, W32;
    /// Guest GS access rights.
    GUEST_GS_ACCESS = 0x481E, W32;
    /// Guest LDTR access rights.
    GUEST_LDTR_ACCESS = 0x4820, W32;
    /// Guest TR access rights.
    GUEST_TR_ACCESS = 0x4822, W32;
    /// Guest interruptibility state.
    GUEST_INTERRUPTIBILITY = 0x4824, W32;
    /// Guest activity state.
    GUEST_ACTIVITY_STATE = 0x4826, W32;
    /// Guest IA32_SYSENTER_CS.
    GUEST_SYSENTER_CS = 0x482A, W32;
    /// VMX-preemption timer value.
    PREEMPTION_TIMER_VALUE = 0x482E, W32;
    /// Host IA32_SYSENTER_CS.
    HOST_SYSENTER_CS = 0x4C00, W32;
    /// CR0 guest/host mask.
    CR0_GUEST_HOST_MASK = 0x6000, Natural;
    /// CR4 guest/host mask.
    CR4_GUEST_HOST_MASK = 0x6002, Natural;
    /// CR0 read shadow.
    CR0_READ_SHADOW = 0x6004, Natural;
    /// CR4 read shadow.
    CR4_READ_SHADOW = 0x6006, Natural;
    /// Exit qualification.
    EXIT_QUALIFICATION = 0x6400, Natural;
    /// Guest CR0.
    GUEST_CR0 = 0x6800, Natural;
    /// Guest CR3.
    GUEST_CR3 = 0x6802, Natural;
    /// Guest CR4.
    GUEST_CR4 = 0x6804, Natural;
    /// Guest ES base.
    GUEST_ES_BASE = 0x6806, Natural;
    /// Guest CS base.
    GUEST_CS_BASE = 0x6808, Natural;
    /// Guest SS base.
    GUEST_SS_BASE = 0x680A, Natural;
    /// Guest DS base.
    GUEST_DS_BASE = 0x680C, Natural;
    /// Guest FS base.
    GUEST_FS_BASE = 0x680E, Natural;
    /// Guest GS base.
    GUEST_GS_BASE = 0x6810, Natural;
    /// Guest LDTR base.
    GUEST_LDTR_BASE = 0x6812, Natural;
    /// Guest TR base.
    GUEST_TR_BASE = 0x6814, Natural;
    /// Guest GDTR base.
    GUEST_GDTR_BASE = 0x6816, Natural;
    /// Guest IDTR base.
    GUEST_IDTR_BASE = 0x6818, Natural;
    /// Guest DR7.
    GUEST_DR7 = 0x681A, Natural;
    /// Guest RSP.
    GUEST_RSP = 0x681C, Natural;
    /// Guest RIP.
    GUEST_RIP = 0x681E, Natural;
    /// Guest RFLAGS.
    GUEST_RFLAGS = 0x6820, Natural;
    /// Guest pending debug exceptions.
    GUEST_PENDING_DEBUG = 0x6822, Natural;
    /// Guest IA32_SYSENTER_ESP.
    GUEST_SYSENTER_ESP = 0x6824, Natural;
    /// Guest IA32_SYSENTER_EIP.
    GUEST_SYSENTER_EIP = 0x6826, Natural;
    /// Host CR0.
    HOST_CR0 = 0x6C00, Natural;
    /// Host CR3.
    HOST_CR3 = 0x6C02, Natural;
    /// Host CR4.
    HOST_CR4 = 0x6C04, Natural;
    /// Host FS base.
    HOST_FS_BASE = 0x6C06, Natural;
    /// Host GS base.
    HOST_GS_BASE = 0x6C08, Natural;
    /// Host TR base.
    HOST_TR_BASE = 0x6C0A, Natural;
    /// Host GDTR base.
    HOST_GDTR_BASE = 0x6C0C, Natural;
    /// Host IDTR base.
    HOST_IDTR_BASE = 0x6C0E, Natural;
    /// Host IA32_SYSENTER_ESP.
    HOST_SYSENTER_ESP = 0x6C10, Natural;
    /// Host IA32_SYSENTER_EIP.
    HOST_SYSENTER_EIP = 0x6C12, Natural;
    /// Host RSP (written by the entry routine itself).
    HOST_RSP = 0x6C14, Natural;
    /// Host RIP (written by the entry routine itself).
    HOST_RIP = 0x6C16, Natural;
}

/// The interruption-information layout shared by the VM-entry interruption-information
/// field (injection), the VM-exit interruption information (the exception or NMI that
/// exited) and the IDT-vectoring information (the event whose delivery the exit
/// interrupted): SDM vol. 3C, 25.8.3, 28.2.2 and 28.2.4.
pub mod event {
    use iommu::bits::Field;

    /// The vector.
    pub const VECTOR: Field = Field::new(0, 8);
    /// The interruption type (the `TYPE_*` values).
    pub const TYPE: Field = Field::new(8, 3);
    /// An error code is delivered (pushed).
    pub const ERROR_VALID: Field = Field::bit(11);
    /// Valid.
    pub const VALID: Field = Field::bit(31);

    /// External interrupt.
    pub const TYPE_EXTERNAL: u64 = 0;
    /// NMI.
    pub const TYPE_NMI: u64 = 2;
    /// Hardware exception.
    pub const TYPE_HW_EXCEPTION: u64 = 3;
    /// Software interrupt (INT n).
    pub const TYPE_SOFT_INT: u64 = 4;
    /// Privileged software exception (ICEBP, INT1).
    pub const TYPE_PRIV_SOFT_EXCEPTION: u64 = 5;
    /// Software exception (INT3, INTO).
    pub const TYPE_SOFT_EXCEPTION: u64 = 6;
}

/// Segment access rights (the guest-state `*_ACCESS` fields; SDM vol. 3C, table 25-2).
pub mod access {
    use iommu::bits::Field;

    /// Descriptor privilege level (SS's is the CPL).
    pub const DPL: Field = Field::new(5, 2);
    /// 64-bit code segment.
    pub const L: Field = Field::bit(13);
    /// The segment is unusable.
    pub const UNUSABLE: Field = Field::bit(16);
}

/// Guest interruptibility state: blocking by STI (bit 0) and by MOV SS (bit 1), the
/// interrupt shadow of the instruction before.
pub const INTERRUPT_SHADOW: iommu::bits::Field = iommu::bits::Field::new(0, 2);

/// A failed VMX instruction: `VMfailInvalid` (no current VMCS) or `VMfailValid` with
/// the VM-instruction error number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmFail {
    /// Which field the access named (for `vmread`/`vmwrite`).
    pub field: &'static str,
    /// The VM-instruction error (0 for VMfailInvalid).
    pub error: u32,
}

/// Reads `f` from the current VMCS.
pub fn read(f: Field) -> Result<u64, VmFail> {
    let value: u64;
    let failed: u8;
    // SAFETY: VMREAD only reads the current VMCS (the CPU is in VMX root operation and
    // the caller made the vCPU's VMCS current); a bad field or no current VMCS only sets
    // CF/ZF, which `setna` captures.
    unsafe {
        asm!("vmread {v}, {f}", "setna {e}", v = out(reg) value, f = in(reg) u64::from(f.encoding),
             e = out(reg_byte) failed, options(nostack));
    }
    if failed != 0 {
        return Err(VmFail { field: f.name, error: instruction_error() });
    }
    Ok(value & f.mask())
}

/// Writes `value` to `f` in the current VMCS.
pub fn write(f: Field, value: u64) -> Result<(), VmFail> {
    let failed: u8;
    // SAFETY: as for `read`: VMWRITE changes only the current VMCS, which belongs to the
    // vCPU that is not running while it is written.
    unsafe {
        asm!("vmwrite {f}, {v}", "setna {e}", f = in(reg) u64::from(f.encoding),
             v = in(reg) value & f.mask(), e = out(reg_byte) failed, options(nostack));
    }
    if failed != 0 {
        return Err(VmFail { field: f.name, error: instruction_error() });
    }
    Ok(())
}

/// The VM-instruction error of the last failed VMX instruction (0 if none is readable).
pub fn instruction_error() -> u32 {
    let value: u64;
    let failed: u8;
    // SAFETY: as for `read`.
    unsafe {
        asm!("vmread {v}, {f}", "setna {e}", v = out(reg) value,
             f = in(reg) u64::from(VM_INSTRUCTION_ERROR.encoding), e = out(reg_byte) failed,
             options(nostack));
    }
    if failed != 0 {
        0
    } else {
        value as u32
    }
}
