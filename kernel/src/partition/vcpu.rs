//! The virtual-CPU backend interface: what the partition's run loop needs from a
//! hardware virtualization extension, with exits decoded into one vendor-neutral enum.
//! [`super::svm::SvmVcpu`] implements it for AMD SVM; a VMX backend (VMCS, EPT) would
//! implement the same trait (see docs/partitions.md).
#![deny(unsafe_code)]

/// Where a guest starts: 64-bit long mode, paging on with the guest's own tables.
#[derive(Debug, Clone, Copy)]
pub struct EntryState {
    /// First instruction (guest-virtual = guest-physical: identity map).
    pub rip: u64,
    /// Initial stack pointer.
    pub rsp: u64,
    /// First argument (the boot page).
    pub rdi: u64,
    /// RSI (a Linux guest's zero page, per the 64-bit boot protocol; else 0).
    pub rsi: u64,
    /// A GDT in guest memory with the Linux boot protocol's layout (0x10 flat 64-bit
    /// code, 0x18 flat data, 32 bytes): CS = 0x10 and DS = ES = SS = 0x18 are loaded from
    /// it. `None`: no GDT, segments set in the backend's guest state only.
    pub boot_gdt: Option<u64>,
    /// The guest's page-table root (guest-physical).
    pub cr3: u64,
}

/// Guest registers the run loop reads (hypercall arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    /// RAX.
    Rax,
    /// RCX.
    Rcx,
    /// RSI.
    Rsi,
    /// RDX (the high half of an MSR value).
    Rdx,
    /// RIP.
    Rip,
}

/// The guest's mode and paging state, for emulating an instruction it executed (the
/// guest platform's MMIO decoder walks its page tables) and for HLT (RFLAGS.IF).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GuestControl {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// Executing 64-bit code (EFER.LMA and CS.L).
    pub code64: bool,
    /// The exit interrupted the delivery of an event (SVM EXITINTINFO, VMX IDT-vectoring
    /// information): a memory access then belongs to that delivery, not to an
    /// instruction.
    pub delivering_event: bool,
}

impl GuestControl {
    /// RFLAGS.IF: the guest accepts maskable interrupts.
    pub fn interrupts_enabled(&self) -> bool {
        self.rflags & (1 << 9) != 0
    }
}

/// Why the guest stopped running, in vendor-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// An I/O port access; `next_rip` resumes after the instruction.
    Io {
        /// The port.
        port: u16,
        /// Access size in bytes (1, 2, 4).
        size: u8,
        /// OUT (true) or IN.
        write: bool,
        /// String or REP form (not emulated).
        string: bool,
        /// The instruction after the access.
        next_rip: u64,
    },
    /// A hypercall instruction (VMMCALL; VMCALL on VMX).
    Hypercall {
        /// The instruction after it.
        next_rip: u64,
    },
    /// HLT.
    Halt,
    /// A triple fault (or other shutdown condition).
    Shutdown,
    /// A guest exception the backend intercepts.
    Exception {
        /// Vector.
        vector: u8,
        /// Error code (0 when the vector has none).
        error_code: u64,
        /// Where.
        rip: u64,
    },
    /// A guest-physical access the nested tables do not allow.
    NestedPageFault {
        /// The guest-physical address.
        gpa: u64,
        /// The fault's error code.
        error_code: u64,
        /// Where.
        rip: u64,
    },
    /// An MSR access (every MSR is intercepted; only a Linux guest's are emulated, see
    /// `linux/msr.rs`): RDMSR or WRMSR (`write`), MSR number in ECX.
    Msr {
        /// Where.
        rip: u64,
        /// WRMSR (EDX:EAX to the MSR) rather than RDMSR.
        write: bool,
    },
    /// A host interrupt arrived; the host has handled it by the time `run` returns.
    HostInterrupt,
    /// The hardware refused the guest state (VMEXIT_INVALID / VM-entry failure).
    InvalidState,
    /// The backend emulated an intercepted instruction (CPUID, XSETBV, WBINVD, INVD, see
    /// `intercept.rs`); the guest continues after it.
    Emulated {
        /// Which.
        instruction: &'static str,
    },
    /// The guest executed an instruction partitions may not (see `intercept.rs`).
    Refused {
        /// What, in words.
        instruction: &'static str,
        /// Where.
        rip: u64,
    },
    /// A machine check arrived while the guest ran; the host's handler has seen it.
    MachineCheck {
        /// The guest's RIP.
        rip: u64,
    },
    /// Any other exit, undecoded.
    Other {
        /// The backend's raw exit code.
        code: u64,
        /// Where.
        rip: u64,
    },
}

/// A virtual CPU on some hardware extension.
pub trait VcpuBackend {
    /// For logs: "SVM", "VMX".
    fn name(&self) -> &'static str;
    /// Sets the architectural state for a 64-bit entry at `entry`.
    fn enter_long_mode(&mut self, entry: &EntryState);
    /// Which guest exceptions stop the guest (bit n = vector n); others are delivered
    /// through the guest's own IDT.
    fn set_exception_intercepts(&mut self, vectors: u32);
    /// Runs the guest until its next exit. Host interrupts must be enabled so a host
    /// timer can end a runaway guest's slice.
    fn run(&mut self) -> VmExit;
    /// A guest register.
    fn reg(&self, r: Reg) -> u64;
    /// Moves the guest's RIP (to skip an emulated instruction).
    fn set_rip(&mut self, rip: u64);
    /// Sets the guest's RAX (the result of an emulated IN).
    fn set_rax(&mut self, value: u64);
    /// Sets a guest register (an emulated RDMSR's EDX:EAX).
    fn set_reg(&mut self, r: Reg, value: u64);
    /// Delivers exception `vector` (with `error_code` when it has one) to the guest
    /// through its own IDT at the next entry (an emulated instruction that faults: #GP
    /// for a refused MSR).
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    /// The guest's own value of an MSR kept in the backend's guest state (EFER without
    /// the host's SVME/VMXE bits, PAT, FS/GS/KERNEL_GS_BASE, the SYSCALL and SYSENTER
    /// MSRs: `linux::msr::in_guest_state`); `None` for any other MSR.
    fn guest_msr(&self, msr: u32) -> Option<u64>;
    /// Stores a guest's WRMSR of such an MSR; false (the guest gets #GP) for a value the
    /// architecture refuses (reserved EFER bits or an LME change, a bad PAT, a
    /// non-canonical address) or any other MSR.
    fn set_guest_msr(&mut self, msr: u32, value: u64) -> bool;
    /// Requests a virtual interrupt with `vector`, taken by the guest when its RFLAGS.IF
    /// allows (no guest EOI is needed).
    fn inject_interrupt(&mut self, vector: u8);
    /// Whether a requested virtual interrupt has not been taken yet.
    fn interrupt_waiting(&self) -> bool;
    /// Withdraws a requested virtual interrupt that was not taken (the guest platform
    /// re-decides before every entry).
    fn cancel_interrupt(&mut self);
    /// General-purpose register `index` in x86 encoding (0 RAX, 1 RCX, 2 RDX, 3 RBX,
    /// 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8-15 R8-R15; others read 0).
    fn gpr(&self, index: u8) -> u64;
    /// Sets general-purpose register `index` (x86 encoding; others are ignored).
    fn set_gpr(&mut self, index: u8, value: u64);
    /// The guest's control registers, EFER, RFLAGS and code size.
    fn control(&self) -> GuestControl;
}
