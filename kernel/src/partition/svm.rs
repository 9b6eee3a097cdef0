//! AMD SVM: enabling it on the host (EFER.SVME, the host save area), the VMCB, the I/O
//! and MSR permission maps, `clgi; vmrun; stgi`, and exit decoding into [`VmExit`].
//!
//! The VMCB layout is `vmcb.rs`; the world-switch routine `svm_vmrun.rs`. Instruction
//! skips use the CPU's NRIP where it saves one (CPUID 0x8000_000A EDX bit 3; QEMU's TCG
//! does not): `svm_exit::next_rip`. An exit that interrupted an event's delivery
//! (EXITINTINFO) has the event injected again (`vcpu::redelivery`).

use super::svm_exit::{self, Decoded};
use super::svm_vmrun::partition_svm_vmrun;
use super::vcpu::{
    self, EntryState, Event, EventKind, GuestControl, GuestRegs, VcpuBackend, VmExit,
};
use super::vmcb::{ctl, event, intercept as icpt, save, segment, tlb, vintr};
use super::world::GuestWorld;
use super::{intercept, vmcb, world};
use crate::mem::frames;

use super::svm_enable::{cpuid, EFER_SVME, MSR_EFER, NRIP_SAVE};
pub use super::svm_enable::{enable, SvmError};

/// The 8-byte words VMSAVE stores and VMLOAD loads (FS, GS, LDTR, TR with their hidden
/// parts; KERNEL_GS_BASE; the SYSCALL and SYSENTER MSRs): the part of the world switch
/// that `world` does with those two instructions.
pub const VMSAVE_FIELDS: [usize; 16] = [
    save::FS,
    save::FS + segment::BASE,
    save::GS,
    save::GS + segment::BASE,
    save::LDTR,
    save::LDTR + segment::BASE,
    save::TR,
    save::TR + segment::BASE,
    save::STAR,
    save::LSTAR,
    save::CSTAR,
    save::SFMASK,
    save::KERNEL_GS_BASE,
    save::SYSENTER_CS,
    save::SYSENTER_ESP,
    save::SYSENTER_EIP,
];

/// Exceptions intercepted by default: every vector (the guest has no IDT of its own).
pub const ALL_EXCEPTIONS: u32 = u32::MAX;
/// Exceptions intercepted whatever a caller asks: #DB (1) and #AC (17), whose
/// delivery loops (CVE-2015-8104, CVE-2015-5307) would hang the host, and #MC (18),
/// which is the host's.
pub const ALWAYS_INTERCEPTED: u32 = 1 << 1 | 1 << 17 | 1 << 18;

/// Intercept vector 3: what the SVM backend intercepts (each bit's reason is in
/// `vmcb::intercept`).
const MISC1_INTERCEPTS: u32 = icpt::word(&[
    icpt::INTR,
    icpt::NMI,
    icpt::RDPMC,
    icpt::CPUID,
    icpt::INVD,
    icpt::HLT,
    icpt::INVLPGA,
    icpt::IOIO,
    icpt::MSR,
    icpt::TASK_SWITCH,
    icpt::SHUTDOWN,
]);
/// Intercept vector 4.
const MISC2_INTERCEPTS: u32 = icpt::word(&[
    icpt::SVM_INSTRUCTIONS,
    icpt::ICEBP,
    icpt::WBINVD,
    icpt::MONITOR_MWAIT,
    icpt::XSETBV,
    icpt::RDPRU,
]);

/// Off only in the hostile suite's control runs ([`force_intercepts_for_test`]); only in
/// builds with the kernel's `test-controls` feature, never in `--release`.
#[cfg(feature = "test-controls")]
static FORCE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Test-only knob (`test-controls` builds only): with `false`, [`ALWAYS_INTERCEPTED`] is
/// no longer added to what `set_exception_intercepts` asks, so the hostile suite's control
/// can show a guest taking its own #DB/#AC.
#[cfg(feature = "test-controls")]
pub fn force_intercepts_for_test(on: bool) {
    FORCE.store(on, core::sync::atomic::Ordering::SeqCst);
}

/// Whether [`ALWAYS_INTERCEPTED`] is forced: off only in a `test-controls` build's control.
#[cfg(feature = "test-controls")]
fn intercepts_forced() -> bool {
    FORCE.load(core::sync::atomic::Ordering::SeqCst)
}

/// Whether [`ALWAYS_INTERCEPTED`] is forced: always, in a build without the test controls.
#[cfg(not(feature = "test-controls"))]
fn intercepts_forced() -> bool {
    true
}

/// What `set_exception_intercepts` adds to what it is asked (both backends):
/// [`ALWAYS_INTERCEPTED`], unless a `test-controls` build's control turned it off.
pub fn forced_exceptions() -> u32 {
    if intercepts_forced() {
        ALWAYS_INTERCEPTED
    } else {
        0
    }
}

/// An SVM virtual CPU: its VMCB, I/O permission map (12 KiB, every port intercepted),
/// MSR permission map (8 KiB, every MSR intercepted) and the guest's registers.
pub struct SvmVcpu {
    vmcb: u64,
    iopm: u64,
    msrpm: u64,
    regs: GuestRegs,
    /// What VMRUN does not switch: XSAVE state, XCR0, DR0-DR3.
    world: GuestWorld,
    /// The CPU saves NRIP on instruction exits (CPUID 0x8000_000A EDX bit 3).
    nrip_save: bool,
    /// Where the guest resumes after the instruction of the last exit
    /// (`svm_exit::next_rip`).
    next_rip: u64,
}

/// A 12-bit VMCB segment attribute: 64-bit code (type 0xB, S, P, L, G).
const CODE64: u16 = 0xA9B;
/// Flat data (type 3, S, P, D/B, G).
const DATA: u16 = 0xC93;
/// A present busy 64-bit TSS (type 0xB, P): the guest's TR at start.
const TSS64_BUSY: u16 = 0x08B;
/// A present LDT (type 2, P): the guest's LDTR at start.
const LDT: u16 = 0x082;

impl SvmVcpu {
    /// A vCPU for a guest whose nested tables are rooted at `nested_cr3`, with
    /// address-space id `asid` (nonzero).
    pub fn new(nested_cr3: u64, asid: u32) -> Result<SvmVcpu, SvmError> {
        enable()?;
        let world = GuestWorld::new()?;
        let vmcb = frames::alloc_zeroed().ok_or(SvmError::OutOfFrames)?;
        let Some(iopm) = frames::alloc_contiguous(3, 4096) else {
            frames::free(vmcb);
            return Err(SvmError::OutOfFrames);
        };
        let Some(msrpm) = frames::alloc_contiguous(2, 4096) else {
            frames::free(vmcb);
            frames::free_contiguous(iopm, 3);
            return Err(SvmError::OutOfFrames);
        };
        // SAFETY: both maps are fresh frames this vCPU owns, identity-mapped; all ones
        // intercepts every port and every MSR.
        unsafe {
            core::ptr::write_bytes(iopm as *mut u8, 0xFF, 3 * 4096);
            core::ptr::write_bytes(msrpm as *mut u8, 0xFF, 2 * 4096);
        }
        let nrip_save = cpuid(0x8000_000A).edx & NRIP_SAVE != 0;
        let mut v = SvmVcpu {
            vmcb,
            iopm,
            msrpm,
            regs: GuestRegs::default(),
            world,
            nrip_save,
            next_rip: 0,
        };
        v.w32(ctl::INTERCEPT_EXCEPTIONS, ALL_EXCEPTIONS);
        v.w32(ctl::INTERCEPT_MISC1, MISC1_INTERCEPTS);
        v.w32(ctl::INTERCEPT_MISC2, MISC2_INTERCEPTS);
        v.w64(ctl::IOPM_BASE, iopm);
        v.w64(ctl::MSRPM_BASE, msrpm);
        v.w32(ctl::ASID, asid.max(1));
        v.w64(ctl::VINTR, vintr::V_INTR_MASKING.with(0, true));
        v.w64(ctl::NP_ENABLE, vmcb::NP_ENABLE.with(0, true));
        v.w64(ctl::N_CR3, nested_cr3);
        // No clean bits: every VMRUN reloads every field from the VMCB.
        v.w32(ctl::CLEAN_BITS, 0);
        Ok(v)
    }

    fn at(&self, off: usize) -> u64 {
        self.vmcb + off as u64
    }

    fn w8(&mut self, off: usize, v: u8) {
        // SAFETY: `off` is a byte field inside the VMCB frame this vCPU owns; the guest is
        // not running while the VMCB changes.
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u8, v) }
    }

    fn w16(&mut self, off: usize, v: u16) {
        // SAFETY: `off` is a field offset inside the VMCB frame this vCPU owns, aligned
        // for the field; the guest is not running while the VMCB changes.
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u16, v) }
    }

    fn w32(&mut self, off: usize, v: u32) {
        // SAFETY: as for `w16`.
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u32, v) }
    }

    fn w64(&mut self, off: usize, v: u64) {
        // SAFETY: as for `w16`.
        unsafe { core::ptr::write_volatile(self.at(off) as *mut u64, v) }
    }

    fn r8(&self, off: usize) -> u8 {
        // SAFETY: as for `w8`, reading.
        unsafe { core::ptr::read_volatile(self.at(off) as *const u8) }
    }

    fn r16(&self, off: usize) -> u16 {
        // SAFETY: as for `w16`, reading.
        unsafe { core::ptr::read_volatile(self.at(off) as *const u16) }
    }

    fn r64(&self, off: usize) -> u64 {
        // SAFETY: as for `w16`, reading.
        unsafe { core::ptr::read_volatile(self.at(off) as *const u64) }
    }

    /// CPUID: the filtered view of `intercept::guest_cpuid`.
    fn emulate_cpuid(&mut self, rip: u64) -> VmExit {
        let Ok(facts) = world::host_facts() else {
            return VmExit::Refused { instruction: "CPUID", rip };
        };
        let r = intercept::guest_cpuid(
            self.regs.get(GuestRegs::RAX) as u32,
            self.regs.get(GuestRegs::RCX) as u32,
            self.r64(save::CR4),
            facts.mask,
            facts.area_size as u32,
        );
        for (reg, value) in
            [GuestRegs::RAX, GuestRegs::RBX, GuestRegs::RCX, GuestRegs::RDX].into_iter().zip(r)
        {
            self.regs.set(reg, u64::from(value));
        }
        self.w64(save::RIP, self.next_rip);
        VmExit::Emulated { instruction: "CPUID" }
    }

    /// XSETBV: XCR0 only (ECX = 0), at CPL 0 with the guest's CR4.OSXSAVE, and only a
    /// value `intercept::xcr0_allowed` accepts; anything else stops the guest.
    fn emulate_xsetbv(&mut self, rip: u64) -> VmExit {
        let refused =
            VmExit::Refused { instruction: "XSETBV of a value the host does not allow", rip };
        let Ok(facts) = world::host_facts() else {
            return refused;
        };
        let (rax, rdx) = (self.regs.get(GuestRegs::RAX), self.regs.get(GuestRegs::RDX));
        let value = (rdx & 0xFFFF_FFFF) << 32 | (rax & 0xFFFF_FFFF);
        let cpl = self.r8(save::CPL);
        let osxsave = self.r64(save::CR4) & 1 << 18 != 0;
        if self.regs.get(GuestRegs::RCX) as u32 != 0 || cpl != 0 || !osxsave {
            return refused;
        }
        if let Err(why) = intercept::xcr0_allowed(value, facts.mask) {
            log::warn!("svm: guest XSETBV {value:#x} refused: {why}");
            return refused;
        }
        self.world.xcr0 = value;
        self.w64(save::RIP, self.next_rip);
        VmExit::Emulated { instruction: "XSETBV" }
    }

    fn segment(&mut self, off: usize, selector: u16, attrib: u16, limit: u32, base: u64) {
        self.w16(off + segment::SELECTOR, selector);
        self.w16(off + segment::ATTRIB, attrib);
        self.w32(off + segment::LIMIT, limit);
        self.w64(off + segment::BASE, base);
    }

    /// After an exit: when it interrupted an event's delivery (EXITINTINFO valid), the
    /// event is queued in EVENTINJ for the next VMRUN as `vcpu::redelivery` decides, so
    /// the guest receives it once. QEMU's TCG differs from the APM in two ways handled
    /// here: it records an interrupted interrupt as an exception of the interrupt's
    /// vector (no exception has a vector above 31, so such an event is an interrupt),
    /// and it leaves V_IRQ set when the delivery of the virtual interrupt exits (the CPU
    /// clears V_IRQ as it takes the interrupt): that request is the event re-injected
    /// here, so it is withdrawn, or the guest would take the interrupt twice.
    fn complete_event(&mut self) {
        let Some(e) = interrupted_event(self.r64(ctl::EXIT_INT_INFO)) else { return };
        if e.kind == EventKind::Interrupt {
            let v = self.r64(ctl::VINTR);
            if vintr::V_IRQ.is_set(v) && vintr::V_INTR_VECTOR.get(v) == u64::from(e.vector) {
                self.w64(ctl::VINTR, vintr::V_IRQ.with(v, false));
            }
        }
        if let Some(e) = vcpu::redelivery(e) {
            log::debug!("svm: re-injecting {e:?}, whose delivery the exit interrupted");
            self.w64(ctl::EVENT_INJ, injection(e));
        }
    }

    /// Decodes the exit (`svm_exit::decode`) and performs what it asks of the backend:
    /// CPUID and XSETBV emulation, a host WBINVD, the host's machine-check handler.
    fn decode(&mut self) -> VmExit {
        let code = self.r64(ctl::EXIT_CODE);
        let info1 = self.r64(ctl::EXIT_INFO1);
        let info2 = self.r64(ctl::EXIT_INFO2);
        let rip = self.r64(save::RIP);
        let nrip = self.nrip_save.then(|| self.r64(ctl::NRIP));
        self.next_rip = svm_exit::next_rip(code, rip, info2, nrip);
        match svm_exit::decode(code, info1, info2, rip, self.next_rip) {
            Decoded::Exit(e) => e,
            Decoded::Cpuid => self.emulate_cpuid(rip),
            Decoded::Xsetbv => self.emulate_xsetbv(rip),
            Decoded::CacheFlush { invd } => {
                // SAFETY: WBINVD writes back and invalidates the caches; it changes no
                // memory contents, only costs time (bounded by the run's exit budget).
                unsafe { core::arch::asm!("wbinvd", options(nostack)) };
                self.w64(save::RIP, self.next_rip);
                VmExit::Emulated { instruction: if invd { "INVD" } else { "WBINVD" } }
            }
            Decoded::MachineCheck => {
                // The machine check is the host's: its handler sees it as if delivered.
                // SAFETY: INT 18 runs the host's #MC handler (IDT vector 18, on its IST
                // stack); it returns or stops the machine, as for a host machine check.
                unsafe { core::arch::asm!("int 18", options(nostack)) };
                VmExit::MachineCheck { rip }
            }
        }
    }
}

impl VcpuBackend for SvmVcpu {
    fn name(&self) -> &'static str {
        "SVM"
    }

    fn enter_long_mode(&mut self, e: &EntryState) {
        for off in [save::ES, save::SS, save::DS] {
            self.segment(off, 0x10, DATA, u32::MAX, 0);
        }
        self.segment(save::CS, 0x08, CODE64, u32::MAX, 0);
        // No GDT or IDT: the guest never reloads a segment, and every exception it could
        // take is intercepted (or, with intercepts off, escalates to a shutdown).
        self.segment(save::GDTR, 0, 0, 0, 0);
        if let Some(gdt) = e.boot_gdt {
            // The Linux boot protocol's GDT: __BOOT_CS 0x10, __BOOT_DS 0x18.
            for off in [save::ES, save::SS, save::DS] {
                self.segment(off, 0x18, DATA, u32::MAX, 0);
            }
            self.segment(save::CS, 0x10, CODE64, u32::MAX, 0);
            self.segment(save::GDTR, 0, 0, 31, gdt);
        }
        self.segment(save::IDTR, 0, 0, 0, 0);
        // The clean start of what VMLOAD loads (see `world.rs`): null FS/GS at base 0,
        // TR a busy 64-bit TSS at 0, LDTR an LDT at 0, KERNEL_GS_BASE and the SYSCALL and
        // SYSENTER MSRs 0; a restarted guest finds none of its earlier values.
        for off in [save::FS, save::GS] {
            self.segment(off, 0, 0, 0, 0);
        }
        self.segment(save::TR, 0, TSS64_BUSY, 0xFFFF, 0);
        self.segment(save::LDTR, 0, LDT, 0xFFFF, 0);
        for off in VMSAVE_FIELDS[8..].iter() {
            self.w64(*off, 0);
        }
        self.world.reset();
        self.w8(save::CPL, 0);
        // EFER: LME | LMA | SVME (VMRUN requires the guest's SVME).
        self.w64(save::EFER, 1 << 8 | 1 << 10 | EFER_SVME);
        self.w64(save::CR4, 1 << 5); // PAE
        self.w64(save::CR3, e.cr3);
        // CR0: PE, MP, ET, NE, WP, PG.
        self.w64(save::CR0, 0x8001_0033);
        self.w64(save::DR7, 0x400);
        self.w64(save::DR6, 0xFFFF_0FF0);
        self.w64(save::RFLAGS, 0x2);
        self.w64(save::RIP, e.rip);
        self.w64(save::G_PAT, 0x0007_0406_0007_0406);
        self.regs = GuestRegs::default();
        self.regs.set(GuestRegs::RSP, e.rsp);
        self.regs.set(GuestRegs::RDI, e.rdi);
        self.regs.set(GuestRegs::RSI, e.rsi);
        self.w64(ctl::EVENT_INJ, 0);
        self.w64(ctl::EXIT_INT_INFO, 0);
    }

    fn set_exception_intercepts(&mut self, vectors: u32) {
        let forced = if intercepts_forced() { ALWAYS_INTERCEPTED } else { 0 };
        self.w32(ctl::INTERCEPT_EXCEPTIONS, vectors | forced);
    }

    fn run(&mut self) -> VmExit {
        // Partitions share ASIDs across runs: flush the guest TLB on every entry (cheap
        // under emulation, and always correct).
        self.w8(ctl::TLB_CONTROL, tlb::FLUSH_ALL as u8);
        // VMRUN loads RAX and RSP from the VMCB, the rest from the register file.
        self.w64(save::RAX, self.regs.get(GuestRegs::RAX));
        self.w64(save::RSP, self.regs.get(GuestRegs::RSP));
        x86_64::instructions::interrupts::enable();
        let host = self.world.enter();
        let host_save = world::host_save_page();
        // SAFETY: SVM is enabled with a host save area (`new` called `enable`); the VMCB
        // is a page-aligned frame this vCPU owns, filled by `new`/`enter_long_mode` with
        // its permission maps, nested tables and the state VMLOAD reads; `host_save` is
        // the host's own vmsave page (or 0); the routine restores every callee-saved
        // register and the stack, and GIF is set again (host state back) before it returns.
        unsafe { partition_svm_vmrun(self.vmcb, &mut self.regs, host_save) };
        self.regs.set(GuestRegs::RAX, self.r64(save::RAX));
        self.regs.set(GuestRegs::RSP, self.r64(save::RSP));
        // An injected event was delivered by that VMRUN, or its delivery was interrupted
        // and EXITINTINFO holds it (QEMU clears the field on #VMEXIT, the APM does not
        // promise it): never inject it twice; `complete_event` re-queues what must be.
        self.w64(ctl::EVENT_INJ, 0);
        self.world.leave(host);
        self.complete_event();
        self.decode()
    }

    fn regs(&self) -> &GuestRegs {
        &self.regs
    }

    fn regs_mut(&mut self) -> &mut GuestRegs {
        &mut self.regs
    }

    fn rip(&self) -> u64 {
        self.r64(save::RIP)
    }

    fn skip_instruction(&mut self) {
        self.set_rip(self.next_rip);
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let e = Event { kind: EventKind::Exception, vector, error_code };
        self.w64(ctl::EVENT_INJ, injection(e));
    }

    fn guest_msr(&self, msr: u32) -> Option<u64> {
        Some(match msr {
            // The guest never sees the SVME bit VMRUN needs.
            MSR_EFER => self.r64(save::EFER) & !EFER_SVME,
            _ => self.r64(msr_field(msr)?),
        })
    }

    fn set_guest_msr(&mut self, msr: u32, value: u64) -> bool {
        use super::linux::msr::{canonical, efer_write, pat_valid};
        match msr {
            MSR_EFER => match efer_write(self.r64(save::EFER) & !EFER_SVME, value) {
                Some(efer) => {
                    self.w64(save::EFER, efer | EFER_SVME);
                    true
                }
                None => false,
            },
            0x277 if !pat_valid(value) => false,
            // Segment bases, LSTAR/CSTAR and SYSENTER_ESP/EIP are addresses.
            0xC000_0100..=0xC000_0102 | 0xC000_0082 | 0xC000_0083 | 0x175 | 0x176
                if !canonical(value) =>
            {
                false
            }
            _ => match msr_field(msr) {
                Some(off) => {
                    self.w64(off, value);
                    true
                }
                None => false,
            },
        }
    }

    fn set_rip(&mut self, rip: u64) {
        self.w64(save::RIP, rip);
        // Moving past an instruction ends the STI/MOV SS interrupt shadow it was in.
        let shadow = self.r64(ctl::INTERRUPT_SHADOW);
        self.w64(ctl::INTERRUPT_SHADOW, vmcb::INTERRUPT_SHADOW.with(shadow, false));
    }

    fn inject_interrupt(&mut self, vector: u8) {
        use vintr::{V_IGN_TPR, V_INTR_PRIO, V_INTR_VECTOR, V_IRQ};
        let v = self.r64(ctl::VINTR);
        let v = V_INTR_VECTOR.set(
            V_IRQ.with(V_IGN_TPR.with(V_INTR_PRIO.set(v, 0xF), true), true),
            u64::from(vector),
        );
        self.w64(ctl::VINTR, v);
    }

    fn interrupt_waiting(&self) -> bool {
        vintr::V_IRQ.is_set(self.r64(ctl::VINTR))
    }

    fn cancel_interrupt(&mut self) {
        let v = self.r64(ctl::VINTR);
        self.w64(ctl::VINTR, vintr::V_IRQ.with(v, false));
    }

    fn nested_tables_changed(&mut self) {
        // Nothing to do: `run` flushes the whole TLB on every VMRUN.
    }

    fn control(&self) -> GuestControl {
        let cs_attrib = u64::from(self.r16(save::CS + segment::ATTRIB));
        let efer = self.r64(save::EFER);
        GuestControl {
            cr0: self.r64(save::CR0),
            cr3: self.r64(save::CR3),
            cr4: self.r64(save::CR4),
            efer,
            rflags: self.r64(save::RFLAGS),
            code64: efer & 1 << 10 != 0 && vmcb::ATTRIB_L.is_set(cs_attrib),
            delivering_event: event::VALID.is_set(self.r64(ctl::EXIT_INT_INFO)),
        }
    }
}

/// The event an EXITINTINFO value says the exit interrupted, if any (see
/// `SvmVcpu::complete_event` for QEMU's exception-typed interrupts). INT3 and INTO are
/// exceptions the guest raised itself (their instruction runs again).
fn interrupted_event(info: u64) -> Option<Event> {
    if !event::VALID.is_set(info) {
        return None;
    }
    let vector = event::VECTOR.get(info) as u8;
    let kind = match event::TYPE.get(info) {
        event::TYPE_INTR => EventKind::Interrupt,
        event::TYPE_NMI => EventKind::Nmi,
        event::TYPE_EXCEPTION if vector >= 32 => EventKind::Interrupt,
        event::TYPE_EXCEPTION if vector == 3 || vector == 4 => EventKind::SoftwareException,
        event::TYPE_EXCEPTION => EventKind::Exception,
        event::TYPE_SOFT_INT => EventKind::SoftwareInterrupt,
        // Reserved types: nothing the guest could be owed.
        _ => return None,
    };
    let error_code = event::ERROR_VALID.is_set(info).then(|| event::ERROR_CODE.get(info) as u32);
    Some(Event { kind, vector, error_code })
}

/// The EVENTINJ value that injects `e` (software-raised events are never injected: see
/// `vcpu::redelivery`; an INT n would be type 4).
fn injection(e: Event) -> u64 {
    let ty = match e.kind {
        EventKind::Interrupt => event::TYPE_INTR,
        EventKind::Nmi => event::TYPE_NMI,
        EventKind::Exception
        | EventKind::SoftwareException
        | EventKind::PrivilegedSoftwareException => event::TYPE_EXCEPTION,
        EventKind::SoftwareInterrupt => event::TYPE_SOFT_INT,
    };
    let v = event::VALID.with(event::TYPE.set(event::VECTOR.set(0, u64::from(e.vector)), ty), true);
    match e.error_code {
        Some(code) => event::ERROR_CODE.set(event::ERROR_VALID.with(v, true), u64::from(code)),
        None => v,
    }
}

/// Where the VMCB keeps a guest MSR VMRUN or VMLOAD loads (EFER aside).
fn msr_field(msr: u32) -> Option<usize> {
    Some(match msr {
        0x277 => save::G_PAT,
        0x174 => save::SYSENTER_CS,
        0x175 => save::SYSENTER_ESP,
        0x176 => save::SYSENTER_EIP,
        0xC000_0081 => save::STAR,
        0xC000_0082 => save::LSTAR,
        0xC000_0083 => save::CSTAR,
        0xC000_0084 => save::SFMASK,
        0xC000_0100 => save::FS + segment::BASE,
        0xC000_0101 => save::GS + segment::BASE,
        0xC000_0102 => save::KERNEL_GS_BASE,
        _ => return None,
    })
}

impl Drop for SvmVcpu {
    fn drop(&mut self) {
        // The VMCB holds guest register values: zero it with the maps before reuse.
        frames::zero(self.vmcb, 4096);
        frames::free(self.vmcb);
        frames::free_contiguous(self.iopm, 3);
        frames::free_contiguous(self.msrpm, 2);
    }
}
