//! The hostile guest programs' side of the ABI: scenario codes (in
//! [`super::BootInfo::scenario`], a range of their own so the ordinary scenarios can grow)
//! and the check ids they report. Each scenario attacks one thing; the hypervisor's
//! hostile suite (`kernel/src/tests/hostile_tests.rs`) judges what it reports.

/// Scenario codes of the hostile programs.
pub mod scenario {
    /// Fill XMM0-15, the upper half of YMM0 (with AVX), x87 ST0, MXCSR, DR0-DR3,
    /// FS/GS/KERNEL_GS_BASE, PKRU (with PKU) with [`super::SECRET`]-derived values, set
    /// XCR0 to x87|SSE(|AVX), load its own TR and LDTR from its own GDT; report and end.
    pub const STATE_FILL: u64 = 0x100;
    /// Read everything [`STATE_FILL`] writes and report it (a fresh partition must find
    /// only the documented clean state).
    pub const STATE_READ: u64 = 0x101;
    /// Report what CPUID says (SVM, MONITOR, hypervisor bit, signature).
    pub const CPUID_VIEW: u64 = 0x102;
    /// XSETBV with a value the host does not allow (AVX without SSE).
    pub const XSETBV_BAD: u64 = 0x110;
    /// LTR of a TSS in the guest's own GDT, then report the TR selector and end.
    pub const LTR: u64 = 0x111;
    /// INVD, then report and end.
    pub const INVD: u64 = 0x112;
    /// WBINVD, then report and end.
    pub const WBINVD: u64 = 0x113;
    /// RDPMC of counter 0.
    pub const RDPMC: u64 = 0x114;
    /// MWAIT (no MONITOR before it).
    pub const MWAIT: u64 = 0x115;
    /// INVLPGA of address 0, ASID 1.
    pub const INVLPGA: u64 = 0x116;
    /// RFLAGS.TF set with an IDT whose #DB gate points at an instruction that traps
    /// again: the benign #DB loop of CVE-2015-8104 if the host let the guest take #DB.
    pub const DB_LOOP: u64 = 0x117;
    /// ICEBP (INT1).
    pub const ICEBP: u64 = 0x118;
    /// MONITOR.
    pub const MONITOR: u64 = 0x119;
    /// RDPRU of register 0 (MPERF).
    pub const RDPRU: u64 = 0x11B;
    /// [`super::EXIT_LOOP_COUNT`] CPUIDs (each an exit the host emulates), then end: for
    /// measuring what the world switch costs per exit.
    pub const EXIT_LOOP: u64 = 0x140;
    /// Log text with newlines, escape sequences, a quote and a copy of host lines.
    pub const LOG_FORGE: u64 = 0x120;
    /// Leave [`super::DEVICE_SECRET`] in the edu device's DMA buffer (2048 bytes, copied
    /// in by the device from the guest's own page) and end.
    pub const DEVICE_LEAVE: u64 = 0x130;
    /// Copy the edu device's DMA buffer into the guest's own page and report how many of
    /// its bytes are [`super::DEVICE_SECRET`].
    pub const DEVICE_READ: u64 = 0x131;

    /// Whether `s` is one of the hostile scenarios.
    pub fn is_hostile(s: u64) -> bool {
        (0x100..0x200).contains(&s)
    }
}

/// The value [`scenario::STATE_FILL`] spreads: canonical (a valid FS/GS base and DR0-3
/// value) and with bit 63 set (a normal x87 mantissa).
pub const SECRET: u64 = 0xFFFF_A5C3_5EC2_D00D;
/// MXCSR [`scenario::STATE_FILL`] sets (round toward zero, every exception masked).
pub const SECRET_MXCSR: u32 = 0x7F80;
/// PKRU [`scenario::STATE_FILL`] sets (when the CPU has PKU).
pub const SECRET_PKRU: u32 = 0x5555_5554;
/// The TR selector [`scenario::STATE_FILL`] and [`scenario::LTR`] load.
pub const GUEST_TR: u16 = 0x18;
/// The LDTR selector [`scenario::STATE_FILL`] loads.
pub const GUEST_LDTR: u16 = 0x28;

/// CPUIDs [`scenario::EXIT_LOOP`] executes.
pub const EXIT_LOOP_COUNT: u64 = 20_000;

/// The byte [`scenario::DEVICE_LEAVE`] fills the device's buffer with.
pub const DEVICE_SECRET: u8 = 0xA5;

/// Check ids of the hostile programs (a range of their own).
pub mod check {
    /// How many XMM registers (and YMM0's upper half) hold [`super::SECRET`].
    pub const XMM_SECRETS: u64 = 0x100;
    /// 1 when x87 ST0 holds [`super::SECRET`] as its mantissa.
    pub const X87_SECRETS: u64 = 0x101;
    /// MXCSR.
    pub const MXCSR: u64 = 0x102;
    /// x87 control word (FCW) in the low 16 bits, abridged tag word (FTW) above.
    pub const FPU_CONTROL: u64 = 0x103;
    /// How many of DR0-DR3 hold [`super::SECRET`].
    pub const DR_SECRETS: u64 = 0x104;
    /// How many of FS base, GS base, KERNEL_GS_BASE hold [`super::SECRET`].
    pub const SEGMENT_SECRETS: u64 = 0x105;
    /// XCR0.
    pub const XCR0: u64 = 0x106;
    /// PKRU (0 without PKU).
    pub const PKRU: u64 = 0x107;
    /// The TR selector (`str`).
    pub const TR: u64 = 0x108;
    /// The LDTR selector (`sldt`).
    pub const LDTR: u64 = 0x109;
    /// Which features the program found (bit 0 FSGSBASE, 1 AVX, 2 PKU).
    pub const FEATURES: u64 = 0x10A;
    /// CPUID 0x8000_0001 ECX.
    pub const CPUID_EXT_ECX: u64 = 0x10B;
    /// CPUID 1 ECX.
    pub const CPUID_1_ECX: u64 = 0x10C;
    /// CPUID 0x4000_0000 EBX.
    pub const CPUID_HV_EBX: u64 = 0x10D;
    /// The guest resumed after the attacking instruction (value: which scenario).
    pub const RESUMED: u64 = 0x10E;
    /// [`super::scenario::DEVICE_READ`]: bytes of the device buffer equal to
    /// [`super::DEVICE_SECRET`] (value `u64::MAX`: no device or a DMA timeout).
    pub const DEVICE_SECRET_BYTES: u64 = 0x10F;
}
