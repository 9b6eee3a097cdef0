//! The virtual-CPU backend interface: what the partition's run loop needs from a
//! hardware virtualization extension, with exits decoded into one vendor-neutral enum.
//! [`super::svm::SvmVcpu`] implements it for AMD SVM and [`super::vmx::VmxVcpu`] for
//! Intel VMX (see docs/partitions.md). Shared by both: the guest's register file
//! ([`GuestRegs`]) and the policy for events an exit interrupted ([`redelivery`]).
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

impl Reg {
    /// Its general-purpose register number in x86 encoding (`None` for RIP).
    pub fn gpr_index(self) -> Option<u8> {
        match self {
            Reg::Rax => Some(GuestRegs::RAX),
            Reg::Rcx => Some(GuestRegs::RCX),
            Reg::Rdx => Some(GuestRegs::RDX),
            Reg::Rsi => Some(GuestRegs::RSI),
            Reg::Rip => None,
        }
    }
}

/// The guest's sixteen general-purpose registers, indexed by their x86 number (0 RAX,
/// 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8-15 R8-R15): the one register file
/// both backends keep. Each backend's entry routine loads the guest's registers from it
/// and stores them back (its layout is what `partition_svm_vmrun` and
/// `partition_vmx_run` address, 8 bytes per register in this order); the registers the
/// hardware itself switches (SVM: RAX and RSP in the VMCB; VMX: RSP in the VMCS) are
/// copied between it and the hardware's field around each entry, so this is always the
/// guest's value while it is not running.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GuestRegs {
    gpr: [u64; 16],
}

impl GuestRegs {
    /// RAX's number.
    pub const RAX: u8 = 0;
    /// RCX's number.
    pub const RCX: u8 = 1;
    /// RDX's number.
    pub const RDX: u8 = 2;
    /// RBX's number.
    pub const RBX: u8 = 3;
    /// RSP's number.
    pub const RSP: u8 = 4;
    /// RSI's number.
    pub const RSI: u8 = 6;
    /// RDI's number.
    pub const RDI: u8 = 7;

    /// Register `index` (0 for a number that is not a register).
    pub fn get(&self, index: u8) -> u64 {
        self.gpr.get(usize::from(index)).copied().unwrap_or(0)
    }

    /// Sets register `index` (a number that is not a register is ignored).
    pub fn set(&mut self, index: u8, value: u64) {
        if let Some(slot) = self.gpr.get_mut(usize::from(index)) {
            *slot = value;
        }
    }
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

/// What kind of event a guest was being delivered (SVM EXITINTINFO / EVENTINJ type, VMX
/// IDT-vectoring / VM-entry interruption type), in vendor-neutral terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A maskable interrupt (an external interrupt, or a virtual one the host requested).
    Interrupt,
    /// A non-maskable interrupt.
    Nmi,
    /// A hardware exception (vectors 0-31).
    Exception,
    /// A software interrupt (INT n).
    SoftwareInterrupt,
    /// A software exception (INT3, INTO).
    SoftwareException,
    /// A privileged software exception (ICEBP, INT1).
    PrivilegedSoftwareException,
}

/// An event whose delivery through the guest's IDT an exit interrupted (the guest's
/// stack, IDT or handler page faulted in the nested tables, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Its kind.
    pub kind: EventKind,
    /// Its vector.
    pub vector: u8,
    /// Its error code, when it pushes one.
    pub error_code: Option<u32>,
}

/// The one re-delivery policy both backends follow after an exit that interrupted the
/// delivery of `event` (what Linux's KVM does in `svm_complete_interrupts` and
/// `vmx_complete_interrupts`): the event is injected again at the next entry, so the
/// guest receives it exactly once. Interrupts, NMIs and hardware exceptions are
/// re-injected as they were (a trap-type exception or an interrupt would otherwise be
/// lost: nothing raises it again). Software-raised events (INT n, INT3, INTO, ICEBP) are
/// not: the guest's RIP still names the instruction that raised them, which runs again
/// and raises the event anew (re-injecting it would need the instruction's length, and
/// would deliver it twice if the instruction also ran). `None`: nothing to re-inject
/// (also always, in a `test-controls` build's control run: [`set_redelivery_for_test`]).
pub fn redelivery(event: Event) -> Option<Event> {
    if !redelivery_on() {
        return None;
    }
    match event.kind {
        EventKind::Interrupt | EventKind::Nmi | EventKind::Exception => Some(event),
        EventKind::SoftwareInterrupt
        | EventKind::SoftwareException
        | EventKind::PrivilegedSoftwareException => None,
    }
}

/// Off only in the re-delivery test's control run; only in `test-controls` builds.
#[cfg(feature = "test-controls")]
static REDELIVERY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Test-only knob (`test-controls` builds only): with `false`, [`redelivery`] re-injects
/// nothing, so the re-delivery test's control shows an interrupted event lost.
#[cfg(feature = "test-controls")]
pub fn set_redelivery_for_test(on: bool) {
    REDELIVERY.store(on, core::sync::atomic::Ordering::SeqCst);
}

#[cfg(feature = "test-controls")]
fn redelivery_on() -> bool {
    REDELIVERY.load(core::sync::atomic::Ordering::SeqCst)
}

#[cfg(not(feature = "test-controls"))]
fn redelivery_on() -> bool {
    true
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
    /// The guest's general-purpose registers (valid while it is not running).
    fn regs(&self) -> &GuestRegs;
    /// The same, to change them (an emulated instruction's result).
    fn regs_mut(&mut self) -> &mut GuestRegs;
    /// The guest's RIP.
    fn rip(&self) -> u64;
    /// Moves the guest's RIP (to skip an emulated instruction); it also ends the STI /
    /// MOV SS interrupt shadow the instruction was in.
    fn set_rip(&mut self, rip: u64);
    /// Moves RIP past the instruction that caused the last exit (HLT, RDMSR, WRMSR, ...),
    /// by the length the hardware reported (see each backend's `next_rip`).
    fn skip_instruction(&mut self);
    /// A guest register.
    fn reg(&self, r: Reg) -> u64 {
        match r.gpr_index() {
            Some(i) => self.regs().get(i),
            None => self.rip(),
        }
    }
    /// Sets the guest's RAX (the result of an emulated IN).
    fn set_rax(&mut self, value: u64) {
        self.regs_mut().set(GuestRegs::RAX, value);
    }
    /// Sets a guest register (an emulated RDMSR's EDX:EAX).
    fn set_reg(&mut self, r: Reg, value: u64) {
        match r.gpr_index() {
            Some(i) => self.regs_mut().set(i, value),
            None => self.set_rip(value),
        }
    }
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
    fn gpr(&self, index: u8) -> u64 {
        self.regs().get(index)
    }
    /// Sets general-purpose register `index` (x86 encoding; others are ignored).
    fn set_gpr(&mut self, index: u8, value: u64) {
        self.regs_mut().set(index, value);
    }
    /// The nested tables gained or changed a mapping (a BAR, a page mapped on first
    /// access): translations the CPU cached for this guest must not be used again.
    fn nested_tables_changed(&mut self);
    /// The guest's control registers, EFER, RFLAGS and code size.
    fn control(&self) -> GuestControl;
}
