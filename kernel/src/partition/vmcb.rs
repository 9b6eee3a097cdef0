//! The VMCB layout, declared once (AMD APM vol. 2, appendix B): the byte offsets of the
//! control area ([`ctl`]) and of the state-save area ([`save`]), and the bit fields inside
//! them ([`intercept`], [`event`], [`vintr`] and the one-bit controls). `svm.rs` reads and
//! writes the VMCB only through these; [`OFFSETS`] names every offset, and a compile-time
//! check keeps them in order, inside the page and aligned for their width.
#![deny(unsafe_code)]

use iommu::bits::Field;

/// Control-area byte offsets.
pub mod ctl {
    /// Intercept vector 2: exceptions (bit n = vector n).
    pub const INTERCEPT_EXCEPTIONS: usize = 0x008;
    /// Intercept vector 3 ([`super::intercept`]'s `MISC1` bits).
    pub const INTERCEPT_MISC1: usize = 0x00C;
    /// Intercept vector 4 ([`super::intercept`]'s `MISC2` bits).
    pub const INTERCEPT_MISC2: usize = 0x010;
    /// Physical base of the I/O permission map.
    pub const IOPM_BASE: usize = 0x040;
    /// Physical base of the MSR permission map.
    pub const MSRPM_BASE: usize = 0x048;
    /// Guest ASID (32 bits).
    pub const ASID: usize = 0x058;
    /// TLB control (8 bits, [`super::tlb`]).
    pub const TLB_CONTROL: usize = 0x05C;
    /// The virtual-interrupt word ([`super::vintr`]).
    pub const VINTR: usize = 0x060;
    /// Interrupt shadow ([`super::INTERRUPT_SHADOW`]).
    pub const INTERRUPT_SHADOW: usize = 0x068;
    /// Exit code.
    pub const EXIT_CODE: usize = 0x070;
    /// EXITINFO1.
    pub const EXIT_INFO1: usize = 0x078;
    /// EXITINFO2.
    pub const EXIT_INFO2: usize = 0x080;
    /// EXITINTINFO: the event whose delivery the exit interrupted ([`super::event`]).
    pub const EXIT_INT_INFO: usize = 0x088;
    /// Nested-paging enable ([`super::NP_ENABLE`]).
    pub const NP_ENABLE: usize = 0x090;
    /// EVENTINJ: the event to inject at VMRUN ([`super::event`]).
    pub const EVENT_INJ: usize = 0x0A8;
    /// Nested page-table root.
    pub const N_CR3: usize = 0x0B0;
    /// VMCB clean bits (32 bits): left 0, so the CPU reloads every field on each VMRUN.
    pub const CLEAN_BITS: usize = 0x0C0;
    /// Next sequential instruction pointer (NRIP save, CPUID 0x8000_000A EDX bit 3).
    pub const NRIP: usize = 0x0C8;
}

/// State-save-area byte offsets. A segment is 16 bytes: selector (+0, 16 bits),
/// attributes (+2, 16 bits), limit (+4, 32 bits), base (+8, 64 bits).
pub mod save {
    /// ES.
    pub const ES: usize = 0x400;
    /// CS.
    pub const CS: usize = 0x410;
    /// SS.
    pub const SS: usize = 0x420;
    /// DS.
    pub const DS: usize = 0x430;
    /// FS.
    pub const FS: usize = 0x440;
    /// GS.
    pub const GS: usize = 0x450;
    /// GDTR (limit and base only).
    pub const GDTR: usize = 0x460;
    /// LDTR.
    pub const LDTR: usize = 0x470;
    /// IDTR (limit and base only).
    pub const IDTR: usize = 0x480;
    /// TR.
    pub const TR: usize = 0x490;
    /// CPL (8 bits).
    pub const CPL: usize = 0x4CB;
    /// EFER.
    pub const EFER: usize = 0x4D0;
    /// CR4.
    pub const CR4: usize = 0x548;
    /// CR3.
    pub const CR3: usize = 0x550;
    /// CR0.
    pub const CR0: usize = 0x558;
    /// DR7.
    pub const DR7: usize = 0x560;
    /// DR6.
    pub const DR6: usize = 0x568;
    /// RFLAGS.
    pub const RFLAGS: usize = 0x570;
    /// RIP.
    pub const RIP: usize = 0x578;
    /// RSP.
    pub const RSP: usize = 0x5D8;
    /// RAX.
    pub const RAX: usize = 0x5F8;
    /// STAR.
    pub const STAR: usize = 0x600;
    /// LSTAR.
    pub const LSTAR: usize = 0x608;
    /// CSTAR.
    pub const CSTAR: usize = 0x610;
    /// SFMASK.
    pub const SFMASK: usize = 0x618;
    /// KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: usize = 0x620;
    /// SYSENTER_CS.
    pub const SYSENTER_CS: usize = 0x628;
    /// SYSENTER_ESP.
    pub const SYSENTER_ESP: usize = 0x630;
    /// SYSENTER_EIP.
    pub const SYSENTER_EIP: usize = 0x638;
    /// Guest PAT.
    pub const G_PAT: usize = 0x668;
}

/// Every declared offset with its name and width in bytes, in address order.
pub const OFFSETS: &[(&str, usize, usize)] = &[
    ("INTERCEPT_EXCEPTIONS", ctl::INTERCEPT_EXCEPTIONS, 4),
    ("INTERCEPT_MISC1", ctl::INTERCEPT_MISC1, 4),
    ("INTERCEPT_MISC2", ctl::INTERCEPT_MISC2, 4),
    ("IOPM_BASE", ctl::IOPM_BASE, 8),
    ("MSRPM_BASE", ctl::MSRPM_BASE, 8),
    ("ASID", ctl::ASID, 4),
    ("TLB_CONTROL", ctl::TLB_CONTROL, 1),
    ("VINTR", ctl::VINTR, 8),
    ("INTERRUPT_SHADOW", ctl::INTERRUPT_SHADOW, 8),
    ("EXIT_CODE", ctl::EXIT_CODE, 8),
    ("EXIT_INFO1", ctl::EXIT_INFO1, 8),
    ("EXIT_INFO2", ctl::EXIT_INFO2, 8),
    ("EXIT_INT_INFO", ctl::EXIT_INT_INFO, 8),
    ("NP_ENABLE", ctl::NP_ENABLE, 8),
    ("EVENT_INJ", ctl::EVENT_INJ, 8),
    ("N_CR3", ctl::N_CR3, 8),
    ("CLEAN_BITS", ctl::CLEAN_BITS, 4),
    ("NRIP", ctl::NRIP, 8),
    ("ES", save::ES, 16),
    ("CS", save::CS, 16),
    ("SS", save::SS, 16),
    ("DS", save::DS, 16),
    ("FS", save::FS, 16),
    ("GS", save::GS, 16),
    ("GDTR", save::GDTR, 16),
    ("LDTR", save::LDTR, 16),
    ("IDTR", save::IDTR, 16),
    ("TR", save::TR, 16),
    ("CPL", save::CPL, 1),
    ("EFER", save::EFER, 8),
    ("CR4", save::CR4, 8),
    ("CR3", save::CR3, 8),
    ("CR0", save::CR0, 8),
    ("DR7", save::DR7, 8),
    ("DR6", save::DR6, 8),
    ("RFLAGS", save::RFLAGS, 8),
    ("RIP", save::RIP, 8),
    ("RSP", save::RSP, 8),
    ("RAX", save::RAX, 8),
    ("STAR", save::STAR, 8),
    ("LSTAR", save::LSTAR, 8),
    ("CSTAR", save::CSTAR, 8),
    ("SFMASK", save::SFMASK, 8),
    ("KERNEL_GS_BASE", save::KERNEL_GS_BASE, 8),
    ("SYSENTER_CS", save::SYSENTER_CS, 8),
    ("SYSENTER_ESP", save::SYSENTER_ESP, 8),
    ("SYSENTER_EIP", save::SYSENTER_EIP, 8),
    ("G_PAT", save::G_PAT, 8),
];

/// The table is in address order, without overlaps, inside the 4 KiB VMCB, and each
/// field is aligned to its width (up to 8): a mistyped offset fails to compile.
const _: () = {
    let mut i = 0;
    while i < OFFSETS.len() {
        let (_, off, width) = OFFSETS[i];
        let align = if width > 8 { 8 } else { width };
        assert!(off % align == 0, "VMCB field misaligned");
        assert!(off + width <= 4096, "VMCB field outside the page");
        if i > 0 {
            let (_, prev, prev_width) = OFFSETS[i - 1];
            assert!(prev + prev_width <= off, "VMCB fields overlap or are out of order");
        }
        i += 1;
    }
};

/// Intercept bits. The policy behind each is in `intercept.rs`; the reason the SVM backend
/// sets each one is given here, once per bit.
pub mod intercept {
    use iommu::bits::Field;

    // Vector 3 (`ctl::INTERCEPT_MISC1`).
    /// Host interrupts end the guest's slice (the host timer bounds every run).
    pub const INTR: Field = Field::bit(0);
    /// NMIs are the host's.
    pub const NMI: Field = Field::bit(1);
    /// RDPMC: the performance counters are the host's; refused.
    pub const RDPMC: Field = Field::bit(15);
    /// CPUID: emulated with a filtered view (no SVM, no PMU, no MONITOR, ...).
    pub const CPUID: Field = Field::bit(18);
    /// INVD: never executed (it would drop the host's dirty cache lines); emulated as
    /// WBINVD.
    pub const INVD: Field = Field::bit(22);
    /// HLT: the guest is done with the CPU (the run ends), or, with the guest platform
    /// and interrupts on, waits for its next virtual interrupt.
    pub const HLT: Field = Field::bit(24);
    /// INVLPGA: an SVM instruction reaching other ASIDs' TLB entries; refused.
    pub const INVLPGA: Field = Field::bit(26);
    /// I/O: only the hypercall port (and the platform's) is served.
    pub const IOIO: Field = Field::bit(27);
    /// MSRs: only a Linux guest's are emulated; any other access stops the guest.
    pub const MSR: Field = Field::bit(28);
    /// Task switches: long mode has none; refused.
    pub const TASK_SWITCH: Field = Field::bit(29);
    /// Triple faults end the run instead of resetting the host.
    pub const SHUTDOWN: Field = Field::bit(31);
    // RDTSC (vector 3 bit 14) and RDTSCP (vector 4 bit 7) are deliberately not
    // intercepted: see `intercept.rs`.

    // Vector 4 (`ctl::INTERCEPT_MISC2`).
    /// VMRUN, VMMCALL, VMLOAD, VMSAVE, STGI, CLGI, SKINIT (bits 0-6): the guest uses none
    /// of SVM (VMRUN's intercept is also required by the hardware).
    pub const SVM_INSTRUCTIONS: Field = Field::new(0, 7);
    /// ICEBP (INT1): a #DB the exception intercept does not see (CVE-2015-8104); refused.
    pub const ICEBP: Field = Field::bit(8);
    /// WBINVD: executed by the host on the guest's behalf (emulated).
    pub const WBINVD: Field = Field::bit(9);
    /// MONITOR, MWAIT, MWAIT when armed (bits 10-12): CPUID says there is none; refused.
    pub const MONITOR_MWAIT: Field = Field::new(10, 3);
    /// XSETBV: XCR0 is host state; only values `intercept::xcr0_allowed` accepts are
    /// loaded.
    pub const XSETBV: Field = Field::bit(13);
    /// RDPRU: the host's processor registers; refused.
    pub const RDPRU: Field = Field::bit(14);

    /// The 32-bit intercept word with every field in `fields` set.
    pub const fn word(fields: &[Field]) -> u32 {
        let mut w = 0u64;
        let mut i = 0;
        while i < fields.len() {
            w |= fields[i].mask();
            i += 1;
        }
        w as u32
    }
}

/// EVENTINJ and EXITINTINFO share one layout.
pub mod event {
    use iommu::bits::Field;

    /// The vector.
    pub const VECTOR: Field = Field::new(0, 8);
    /// The type ([`TYPE_INTR`], [`TYPE_NMI`], [`TYPE_EXCEPTION`], [`TYPE_SOFT_INT`]).
    pub const TYPE: Field = Field::new(8, 3);
    /// The error code is valid (pushed).
    pub const ERROR_VALID: Field = Field::bit(11);
    /// The event is valid.
    pub const VALID: Field = Field::bit(31);
    /// The error code.
    pub const ERROR_CODE: Field = Field::new(32, 32);

    /// An external or virtual interrupt.
    pub const TYPE_INTR: u64 = 0;
    /// An NMI.
    pub const TYPE_NMI: u64 = 2;
    /// An exception (fault or trap).
    pub const TYPE_EXCEPTION: u64 = 3;
    /// A software interrupt (INT n).
    pub const TYPE_SOFT_INT: u64 = 4;
}

/// The virtual-interrupt word at `ctl::VINTR`.
pub mod vintr {
    use iommu::bits::Field;

    /// A virtual interrupt is requested (cleared when the guest takes it).
    pub const V_IRQ: Field = Field::bit(8);
    /// Its priority (compared with V_TPR unless [`V_IGN_TPR`]).
    pub const V_INTR_PRIO: Field = Field::new(16, 4);
    /// Ignore the virtual TPR.
    pub const V_IGN_TPR: Field = Field::bit(20);
    /// Virtual interrupt masking: host interrupts stay governed by the host's RFLAGS.IF,
    /// the guest's IF governs only the virtual interrupt.
    pub const V_INTR_MASKING: Field = Field::bit(24);
    /// The virtual interrupt's vector.
    pub const V_INTR_VECTOR: Field = Field::new(32, 8);
}

/// TLB control values (`ctl::TLB_CONTROL`).
pub mod tlb {
    /// Flush the whole TLB (every ASID) on VMRUN.
    pub const FLUSH_ALL: u64 = 1;
}

/// `ctl::INTERRUPT_SHADOW`: the guest is in an STI / MOV SS interrupt shadow.
pub const INTERRUPT_SHADOW: Field = Field::bit(0);
/// `ctl::NP_ENABLE`: nested paging on.
pub const NP_ENABLE: Field = Field::bit(0);

/// Segment attributes (the 12-bit VMCB form, at +2 of a segment): L (64-bit code).
pub const ATTRIB_L: Field = Field::bit(9);
/// Offsets inside a 16-byte segment field.
pub mod segment {
    /// Selector (16 bits).
    pub const SELECTOR: usize = 0;
    /// Attributes (16 bits).
    pub const ATTRIB: usize = 2;
    /// Limit (32 bits).
    pub const LIMIT: usize = 4;
    /// Base (64 bits).
    pub const BASE: usize = 8;
}
