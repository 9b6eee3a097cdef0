//! Intel VMX: VMX operation on the host (IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits,
//! VMXON), a VMCS per vCPU with its controls adjusted through the TRUE capability MSRs,
//! I/O and MSR bitmaps that intercept everything, EPT and VPID, and the entry routine.
//! Exits are decoded in `exit.rs` into the same `Decoded`/[`VmExit`] as SVM's, and the
//! intercept policy (`intercept.rs`) and the extended-state switch (`world.rs`'s
//! [`GuestWorld`]) are the SVM backend's. The VMCS host-state area restores CR0/CR3/CR4,
//! every segment selector, FS/GS/TR/GDTR/IDTR bases, SYSENTER, EFER and PAT on every
//! exit; what it does not (the GDTR/IDTR limits, which VM exit sets to 0xFFFF, and
//! KERNEL_GS_BASE, which a guest SWAPGS changes) is put back by [`VmxVcpu::run`].

mod caps;
mod entry;
mod events;
pub mod exit;
pub mod host;
pub mod vmcs;
pub mod vpid;

pub use caps::{enable, ept_1g_pages, VmxError};

use super::svm_exit::Decoded;
use super::vcpu::{EntryState, Event, EventKind, GuestControl, GuestRegs, VcpuBackend, VmExit};
use super::world::GuestWorld;
use super::{intercept, world};
use crate::mem::frames;
use caps::*;
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use entry::{partition_vmx_run, vmx_op_clear, vmx_op_ptrld};
use exit::ExitInfo;
use vmcs::{event, read, write, Field, VmFail};

/// The VMCS that is current on this CPU (0: none), so accessors load theirs only when
/// another one is.
static CURRENT: AtomicU64 = AtomicU64::new(0);

/// A VMX virtual CPU: its VMCS, I/O bitmaps (8 KiB, every port intercepted), MSR
/// bitmaps (4 KiB, every MSR intercepted), the registers the VMCS does not hold, and
/// what VM exit does not switch.
pub struct VmxVcpu {
    vmcs: u64,
    io_bitmaps: u64,
    msr_bitmap: u64,
    regs: GuestRegs,
    eptp: u64,
    vpid: u16,
    launched: bool,
    /// Flush this VPID's guest TLB entries before the next entry (new or restarted).
    flush_vpid: bool,
    /// A virtual interrupt waiting for the guest to enable interrupts.
    pending: Option<u8>,
    /// The guest's STAR, LSTAR, CSTAR, SFMASK and KERNEL_GS_BASE (`host::SWAPPED_MSRS`:
    /// neither VM entry nor exit switches them; `run` does), the host's while it runs.
    swapped_msrs: [u64; 5],
    /// Drop every cached EPT translation of this partition (INVEPT) before the next
    /// entry: the vCPU is new (its EPT pointer may name reused tables) or the nested
    /// tables changed since the last entry.
    flush_ept: bool,
    /// What VM exit does not switch: XSAVE state, XCR0, DR0-DR3.
    world: GuestWorld,
    /// The first VMX error of this vCPU (a failed VMWRITE), reported by `run`.
    failed: Option<VmFail>,
    /// Where the guest resumes after the instruction of the last exit (RIP plus the
    /// VM-exit instruction length).
    next_rip: u64,
}

/// Access rights (VMCS format): 64-bit code (type 0xB, S, P, L, G).
const CODE64: u64 = 0xA09B;
/// Flat data (type 3, S, P, D/B, G).
const DATA: u64 = 0xC093;
/// A present busy 64-bit TSS.
const TSS64_BUSY: u64 = 0x008B;
/// An unusable segment.
const UNUSABLE: u64 = vmcs::access::UNUSABLE.mask();

impl VmxVcpu {
    /// A vCPU for a guest whose EPT tables are rooted at `ept_root`.
    pub fn new(ept_root: u64) -> Result<VmxVcpu, VmxError> {
        let caps = caps()?;
        let world = GuestWorld::new().map_err(VmxError::World)?;
        let vmcs = frames::alloc_zeroed().ok_or(VmxError::OutOfFrames)?;
        let Some(io_bitmaps) = frames::alloc_contiguous(2, 4096) else {
            frames::free(vmcs);
            return Err(VmxError::OutOfFrames);
        };
        let Some(msr_bitmap) = frames::alloc_zeroed() else {
            frames::free(vmcs);
            frames::free_contiguous(io_bitmaps, 2);
            return Err(VmxError::OutOfFrames);
        };
        // SAFETY: fresh frames this vCPU owns, identity-mapped: the revision identifier
        // into the VMCS, all ones into both bitmaps (every port, every MSR intercepted).
        unsafe {
            core::ptr::write_volatile(vmcs as *mut u32, caps.revision);
            core::ptr::write_bytes(io_bitmaps as *mut u8, 0xFF, 2 * 4096);
            core::ptr::write_bytes(msr_bitmap as *mut u8, 0xFF, 4096);
        }
        let Some(vpid) = vpid::allocate() else {
            frames::free(vmcs);
            frames::free_contiguous(io_bitmaps, 2);
            frames::free(msr_bitmap);
            return Err(VmxError::NoVpid);
        };
        let mut v = VmxVcpu {
            vmcs,
            io_bitmaps,
            msr_bitmap,
            regs: GuestRegs::default(),
            eptp: iommu::pgtable::nested::ept_pointer(ept_root),
            vpid,
            launched: false,
            flush_vpid: true,
            pending: None,
            swapped_msrs: [0; 5],
            flush_ept: true,
            world,
            failed: None,
            next_rip: 0,
        };
        // SAFETY: VMCLEAR initializes the fresh VMCS (revision written above) and makes
        // it inactive; VMX operation is on (`caps` succeeded).
        if unsafe { vmx_op_clear(vmcs) } {
            return Err(VmxError::Instruction(VmFail { field: "VMCLEAR", error: 0 }));
        }
        v.load()?;
        v.setup(&caps)?;
        Ok(v)
    }

    /// Makes this vCPU's VMCS the current one (VMPTRLD) unless it already is.
    fn load(&self) -> Result<(), VmxError> {
        if CURRENT.load(Ordering::SeqCst) == self.vmcs {
            return Ok(());
        }
        // SAFETY: the VMCS is this vCPU's frame, initialized by VMCLEAR; VMPTRLD only
        // makes it current.
        if unsafe { vmx_op_ptrld(self.vmcs) } {
            return Err(VmxError::Instruction(VmFail { field: "VMPTRLD", error: 0 }));
        }
        CURRENT.store(self.vmcs, Ordering::SeqCst);
        Ok(())
    }

    /// Writes `value` into `f`, remembering the first failure (reported by `run`).
    fn w(&mut self, f: Field, value: u64) {
        if let Err(e) = self.load().and_then(|()| write(f, value).map_err(VmxError::from)) {
            if self.failed.is_none() {
                log::error!("vmx: {e}");
                if let VmxError::Instruction(i) = e {
                    self.failed = Some(i);
                }
            }
        }
    }

    fn r(&self, f: Field) -> u64 {
        self.load().ok().and_then(|()| read(f).ok()).unwrap_or(0)
    }

    /// The controls, bitmaps, EPT and VPID: what stays the same for the vCPU's life.
    fn setup(&mut self, c: &Caps) -> Result<(), VmxError> {
        use vmcs::*;
        self.w(PIN_BASED_CONTROLS, u64::from(c.pin));
        if c.pin & PIN_PREEMPTION_TIMER != 0 {
            // The timer counts down at the TSC rate divided by 2^IA32_VMX_MISC[4:0].
            let rate = rdmsr(MSR_VMX_MISC) & 0x1F;
            self.w(PREEMPTION_TIMER_VALUE, (SLICE_TSC >> rate).max(1));
        }
        self.w(PRIMARY_CONTROLS, u64::from(c.primary));
        self.w(SECONDARY_CONTROLS, u64::from(c.secondary));
        self.w(EXIT_CONTROLS, u64::from(c.exit));
        self.w(ENTRY_CONTROLS, u64::from(c.entry));
        self.w(EXCEPTION_BITMAP, u64::from(super::svm::ALL_EXCEPTIONS));
        self.w(PAGE_FAULT_ERROR_CODE_MASK, 0);
        self.w(PAGE_FAULT_ERROR_CODE_MATCH, 0);
        self.w(CR3_TARGET_COUNT, 0);
        self.w(EXIT_MSR_STORE_COUNT, 0);
        self.w(EXIT_MSR_LOAD_COUNT, 0);
        self.w(ENTRY_MSR_LOAD_COUNT, 0);
        self.w(ENTRY_INTERRUPTION_INFO, 0);
        self.w(IO_BITMAP_A, self.io_bitmaps);
        self.w(IO_BITMAP_B, self.io_bitmaps + 4096);
        self.w(MSR_BITMAP, self.msr_bitmap);
        self.w(TSC_OFFSET, 0);
        self.w(EPT_POINTER, self.eptp);
        self.w(VPID, u64::from(self.vpid));
        self.w(VMCS_LINK_POINTER, u64::MAX);
        // CR4.VMXE must be set while the guest runs (CR4_FIXED0) but is not the guest's:
        // it is owned by the host (mask) and reads as 0 (shadow).
        self.w(CR4_GUEST_HOST_MASK, CR4_VMXE);
        self.w(CR4_READ_SHADOW, 0);
        self.w(CR0_GUEST_HOST_MASK, 0);
        self.w(CR0_READ_SHADOW, 0);
        match self.failed {
            Some(e) => Err(VmxError::Instruction(e)),
            None => Ok(()),
        }
    }

    fn segment(
        &mut self,
        sel: Field,
        base: Field,
        limit: Field,
        access: Field,
        s: (u16, u64, u32, u64),
    ) {
        self.w(sel, u64::from(s.0));
        self.w(base, s.1);
        self.w(limit, u64::from(s.2));
        self.w(access, s.3);
    }

    /// CPUID: the filtered view of `intercept::guest_cpuid`.
    fn emulate_cpuid(&mut self, next_rip: u64) -> VmExit {
        let Ok(facts) = world::host_facts() else {
            return VmExit::Refused { instruction: "CPUID", rip: self.r(vmcs::GUEST_RIP) };
        };
        let guest_cr4 = self.r(vmcs::GUEST_CR4) & !CR4_VMXE;
        let r = intercept::guest_cpuid(
            self.regs.get(GuestRegs::RAX) as u32,
            self.regs.get(GuestRegs::RCX) as u32,
            guest_cr4,
            facts.mask,
            facts.area_size as u32,
        );
        for (reg, value) in
            [GuestRegs::RAX, GuestRegs::RBX, GuestRegs::RCX, GuestRegs::RDX].into_iter().zip(r)
        {
            self.regs.set(reg, u64::from(value));
        }
        self.w(vmcs::GUEST_RIP, next_rip);
        VmExit::Emulated { instruction: "CPUID" }
    }

    /// XSETBV: as the SVM backend's (`intercept::xcr0_allowed`, CPL 0, CR4.OSXSAVE).
    fn emulate_xsetbv(&mut self, rip: u64, next_rip: u64) -> VmExit {
        let refused =
            VmExit::Refused { instruction: "XSETBV of a value the host does not allow", rip };
        let Ok(facts) = world::host_facts() else {
            return refused;
        };
        let (rax, rdx) = (self.regs.get(GuestRegs::RAX), self.regs.get(GuestRegs::RDX));
        let value = (rdx & 0xFFFF_FFFF) << 32 | (rax & 0xFFFF_FFFF);
        // CPL is the SS access rights' DPL.
        let cpl = vmcs::access::DPL.get(self.r(vmcs::GUEST_SS_ACCESS));
        let osxsave = self.r(vmcs::GUEST_CR4) & 1 << 18 != 0;
        if self.regs.get(GuestRegs::RCX) as u32 != 0 || cpl != 0 || !osxsave {
            return refused;
        }
        if let Err(why) = intercept::xcr0_allowed(value, facts.mask) {
            log::warn!("vmx: guest XSETBV {value:#x} refused: {why}");
            return refused;
        }
        self.world.xcr0 = value;
        self.w(vmcs::GUEST_RIP, next_rip);
        VmExit::Emulated { instruction: "XSETBV" }
    }

    /// Reads the exit, decodes it (`exit::decode`) and does what it asks of the backend.
    fn decode(&mut self) -> VmExit {
        use vmcs::*;
        let info = ExitInfo {
            reason: self.r(EXIT_REASON) as u32,
            qualification: self.r(EXIT_QUALIFICATION),
            interruption: self.r(EXIT_INTERRUPTION_INFO) as u32,
            error_code: self.r(EXIT_INTERRUPTION_ERROR_CODE) as u32,
            instruction_length: self.r(EXIT_INSTRUCTION_LENGTH) as u32,
            rip: self.r(GUEST_RIP),
            gpa: self.r(GUEST_PHYSICAL_ADDRESS),
        };
        let next_rip = exit::next_rip(&info);
        self.next_rip = next_rip;
        let interruption = u64::from(info.interruption);
        if info.reason & 0xFFFF == 0
            && event::VALID.is_set(interruption)
            && event::TYPE.get(interruption) == event::TYPE_NMI
        {
            // An NMI exited (NMI exiting): it is the host's, and VM exit consumed it.
            // SAFETY: INT 2 runs the host's NMI handler (IDT vector 2, on its IST stack),
            // as the NMI would have.
            unsafe { asm!("int 2", options(nostack)) };
        }
        if info.reason & 0xFFFF == 7 {
            // The interrupt window opened: stop asking for it (`inject` re-arms).
            self.w(PRIMARY_CONTROLS, self.r(PRIMARY_CONTROLS) & !u64::from(PROC_INTERRUPT_WINDOW));
        }
        match exit::decode(&info) {
            Decoded::Exit(VmExit::InvalidState) => {
                log::warn!(
                    "vmx: VM entry failed: exit reason {:#x}, qualification {:#x}",
                    info.reason,
                    info.qualification
                );
                VmExit::InvalidState
            }
            Decoded::Exit(e) => e,
            Decoded::Cpuid => self.emulate_cpuid(next_rip),
            Decoded::Xsetbv => self.emulate_xsetbv(info.rip, next_rip),
            Decoded::CacheFlush { invd } => {
                // SAFETY: WBINVD writes back and invalidates the caches; it changes no
                // memory contents, only costs time (bounded by the run's exit budget).
                unsafe { asm!("wbinvd", options(nostack)) };
                self.w(GUEST_RIP, next_rip);
                VmExit::Emulated { instruction: if invd { "INVD" } else { "WBINVD" } }
            }
            Decoded::MachineCheck => {
                // SAFETY: INT 18 runs the host's #MC handler (IDT vector 18, on its IST
                // stack); it returns or stops the machine, as for a host machine check.
                unsafe { asm!("int 18", options(nostack)) };
                VmExit::MachineCheck { rip: info.rip }
            }
        }
    }
}

impl VcpuBackend for VmxVcpu {
    fn name(&self) -> &'static str {
        "VMX"
    }

    fn enter_long_mode(&mut self, e: &EntryState) {
        use vmcs::*;
        let data = (0x10, 0, u32::MAX, DATA);
        self.segment(GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_ACCESS, data);
        self.segment(GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_ACCESS, data);
        self.segment(GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_ACCESS, data);
        self.segment(
            GUEST_CS_SELECTOR,
            GUEST_CS_BASE,
            GUEST_CS_LIMIT,
            GUEST_CS_ACCESS,
            (0x08, 0, u32::MAX, CODE64),
        );
        // The clean start `world.rs` describes for SVM: null FS/GS at base 0, TR a busy
        // 64-bit TSS at 0, LDTR unusable, no GDT or IDT, SYSENTER 0, KERNEL_GS_BASE 0.
        let null = (0, 0, 0, UNUSABLE);
        self.segment(GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_ACCESS, null);
        self.segment(GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_ACCESS, null);
        self.segment(
            GUEST_LDTR_SELECTOR,
            GUEST_LDTR_BASE,
            GUEST_LDTR_LIMIT,
            GUEST_LDTR_ACCESS,
            null,
        );
        self.segment(
            GUEST_TR_SELECTOR,
            GUEST_TR_BASE,
            GUEST_TR_LIMIT,
            GUEST_TR_ACCESS,
            (0, 0, 0xFFFF, TSS64_BUSY),
        );
        for (base, limit) in
            [(GUEST_GDTR_BASE, GUEST_GDTR_LIMIT), (GUEST_IDTR_BASE, GUEST_IDTR_LIMIT)]
        {
            self.w(base, 0);
            self.w(limit, 0);
        }
        if let Some(gdt) = e.boot_gdt {
            // The Linux boot protocol's GDT: __BOOT_CS 0x10, __BOOT_DS 0x18.
            let data = (0x18, 0, u32::MAX, DATA);
            self.segment(GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_ACCESS, data);
            self.segment(GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_ACCESS, data);
            self.segment(GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_ACCESS, data);
            let code = (0x10, 0, u32::MAX, CODE64);
            self.segment(GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_ACCESS, code);
            self.w(GUEST_GDTR_BASE, gdt);
            self.w(GUEST_GDTR_LIMIT, 31);
        }
        self.w(GUEST_SYSENTER_CS, 0);
        self.w(GUEST_SYSENTER_ESP, 0);
        self.w(GUEST_SYSENTER_EIP, 0);
        self.swapped_msrs = [0; 5];
        self.world.reset();
        // EFER: LME | LMA. CR4: PAE, and VMXE (host-owned, reads as 0). CR0: PE, MP, ET,
        // NE, WP, PG: the SVM backend's entry state.
        self.w(GUEST_IA32_EFER, 1 << 8 | 1 << 10);
        self.w(GUEST_CR4, 1 << 5 | CR4_VMXE);
        self.w(GUEST_CR3, e.cr3);
        self.w(GUEST_CR0, 0x8001_0033);
        self.w(GUEST_DR7, 0x400);
        self.w(GUEST_IA32_DEBUGCTL, 0);
        // RFLAGS.IF = 1: with external-interrupt exiting every host interrupt exits
        // whatever the guest's IF, which governs only the virtual interrupts the host
        // injects (none before a guest with a device has set up its IDT). IF = 0 would
        // be equivalent on hardware, but Bochs 2.7 re-evaluates interrupt masking only
        // when RFLAGS.IF changes, so a guest entered with IF = 0 from a host with IF = 0
        // never exits for the host's timer (docs/bochs.md).
        self.w(GUEST_RFLAGS, 0x202);
        self.w(GUEST_RIP, e.rip);
        self.w(GUEST_IA32_PAT, 0x0007_0406_0007_0406);
        self.w(GUEST_INTERRUPTIBILITY, 0);
        self.w(GUEST_ACTIVITY_STATE, 0);
        self.w(GUEST_PENDING_DEBUG, 0);
        self.w(ENTRY_INTERRUPTION_INFO, 0);
        self.pending = None;
        self.regs = GuestRegs::default();
        self.regs.set(GuestRegs::RSP, e.rsp);
        self.regs.set(GuestRegs::RDI, e.rdi);
        self.regs.set(GuestRegs::RSI, e.rsi);
        self.flush_vpid = true;
    }

    fn set_exception_intercepts(&mut self, vectors: u32) {
        self.w(vmcs::EXCEPTION_BITMAP, u64::from(vectors | super::svm::forced_exceptions()));
    }

    fn run(&mut self) -> VmExit {
        if let Some(e) = self.failed {
            log::error!("vmx: not entering: VMWRITE of {} failed (error {})", e.field, e.error);
            return VmExit::InvalidState;
        }
        if self.load().is_err() {
            return VmExit::InvalidState;
        }
        self.deliver_pending();
        x86_64::instructions::interrupts::disable();
        let h = host::HostState::capture();
        h.write_to_vmcs(|f, v| self.w(f, v));
        // Cached EPT translations of this partition go when the tables changed (a BAR
        // mapped, a page mapped on first access) or the vCPU is new; this VPID's guest
        // TLB entries when the vCPU is new (the VPID may be reused) or restarted.
        let caps = caps().ok();
        let ept = caps.map_or(0, |c| c.ept_vpid);
        if self.flush_ept {
            host::invept(self.eptp, ept & EPT_INVEPT_SINGLE != 0);
            self.flush_ept = false;
        }
        if self.flush_vpid {
            host::invvpid(self.vpid, ept & CAP_INVVPID_SINGLE != 0);
            self.flush_vpid = false;
        }
        // VM entry loads RSP from the VMCS, the rest from the register file.
        self.w(vmcs::GUEST_RSP, self.regs.get(GuestRegs::RSP));
        let host = self.world.enter();
        host::swap_msrs(&mut self.swapped_msrs);
        // SAFETY: VMX operation is on and this vCPU's VMCS is current (`load`), filled
        // by `new`/`enter_long_mode` and the host state just written; the routine writes
        // HOST_RSP/HOST_RIP itself, restores every callee-saved register and the stack,
        // and returns with interrupts still off.
        let status = unsafe { partition_vmx_run(&mut self.regs, u64::from(self.launched)) };
        host::swap_msrs(&mut self.swapped_msrs);
        h.restore_descriptor_tables();
        self.world.leave(host);
        x86_64::instructions::interrupts::enable();
        if status != 0 {
            log::warn!(
                "vmx: VM{} failed: VM-instruction error {}",
                if self.launched { "RESUME" } else { "LAUNCH" },
                vmcs::instruction_error()
            );
            return VmExit::InvalidState;
        }
        self.launched = true;
        self.regs.set(GuestRegs::RSP, self.r(vmcs::GUEST_RSP));
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
        self.r(vmcs::GUEST_RIP)
    }

    fn skip_instruction(&mut self) {
        self.set_rip(self.next_rip);
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.inject(Event { kind: EventKind::Exception, vector, error_code });
    }

    fn guest_msr(&self, msr: u32) -> Option<u64> {
        // The MSRs the VMCS keeps for the guest, and those `run` switches itself.
        if let Some(i) = host::SWAPPED_MSRS.iter().position(|&m| m == msr) {
            return Some(self.swapped_msrs[i]);
        }
        Some(match msr {
            0xC000_0080 => self.r(vmcs::GUEST_IA32_EFER),
            0x277 => self.r(vmcs::GUEST_IA32_PAT),
            0x174 => self.r(vmcs::GUEST_SYSENTER_CS),
            0x175 => self.r(vmcs::GUEST_SYSENTER_ESP),
            0x176 => self.r(vmcs::GUEST_SYSENTER_EIP),
            0xC000_0100 => self.r(vmcs::GUEST_FS_BASE),
            0xC000_0101 => self.r(vmcs::GUEST_GS_BASE),
            _ => return None,
        })
    }

    fn set_guest_msr(&mut self, msr: u32, value: u64) -> bool {
        use super::linux::msr::{canonical, efer_write, pat_valid};
        let field = match msr {
            0xC000_0080 => {
                let cur = self.r(vmcs::GUEST_IA32_EFER);
                let Some(efer) = efer_write(cur, value) else { return false };
                self.w(vmcs::GUEST_IA32_EFER, efer);
                return true;
            }
            0x277 if !pat_valid(value) => return false,
            // Addresses must be canonical; SFMASK's upper half is reserved. `run` writes
            // the switched ones into the CPU, where anything else would fault the host.
            0x175 | 0x176 | 0xC000_0082 | 0xC000_0083 | 0xC000_0100..=0xC000_0102
                if !canonical(value) =>
            {
                return false
            }
            0xC000_0084 if value >> 32 != 0 => return false,
            0x277 => vmcs::GUEST_IA32_PAT,
            0x174 => vmcs::GUEST_SYSENTER_CS,
            0x175 => vmcs::GUEST_SYSENTER_ESP,
            0x176 => vmcs::GUEST_SYSENTER_EIP,
            0xC000_0100 => vmcs::GUEST_FS_BASE,
            0xC000_0101 => vmcs::GUEST_GS_BASE,
            _ => match host::SWAPPED_MSRS.iter().position(|&m| m == msr) {
                Some(i) => {
                    self.swapped_msrs[i] = value;
                    return true;
                }
                None => return false,
            },
        };
        self.w(field, value);
        true
    }

    fn nested_tables_changed(&mut self) {
        self.flush_ept = true;
    }

    fn cancel_interrupt(&mut self) {
        // Only the request is withdrawn: an interrupt already in the VM-entry
        // interruption information is one the guest took and whose delivery an exit
        // interrupted (`complete_event`), which it must still receive (`deliver_pending`
        // moves a request there only just before the entry, and a VM exit clears it).
        self.pending = None;
        let p = self.r(vmcs::PRIMARY_CONTROLS);
        self.w(vmcs::PRIMARY_CONTROLS, p & !u64::from(PROC_INTERRUPT_WINDOW));
    }

    fn control(&self) -> GuestControl {
        let efer = self.r(vmcs::GUEST_IA32_EFER);
        let cs_l = vmcs::access::L.is_set(self.r(vmcs::GUEST_CS_ACCESS));
        GuestControl {
            cr0: self.r(vmcs::GUEST_CR0),
            cr3: self.r(vmcs::GUEST_CR3),
            // What the guest reads: VMXE is host-owned and reads as 0.
            cr4: self.r(vmcs::GUEST_CR4) & !CR4_VMXE,
            efer,
            rflags: self.r(vmcs::GUEST_RFLAGS),
            code64: efer & 1 << 10 != 0 && cs_l,
            delivering_event: event::VALID.is_set(self.r(vmcs::IDT_VECTORING_INFO)),
        }
    }

    fn set_rip(&mut self, rip: u64) {
        self.w(vmcs::GUEST_RIP, rip);
        // Moving past an instruction ends its STI / MOV SS interrupt shadow (bits 1:0), as
        // the SVM backend does: an emulated `sti; hlt` is then interruptible at once.
        let shadow = self.r(vmcs::GUEST_INTERRUPTIBILITY);
        self.w(vmcs::GUEST_INTERRUPTIBILITY, vmcs::INTERRUPT_SHADOW.set(shadow, 0));
    }

    fn inject_interrupt(&mut self, vector: u8) {
        self.pending = Some(vector);
    }

    fn interrupt_waiting(&self) -> bool {
        // Only the request: what the VM-entry interruption information holds after an
        // exit was taken already (see `cancel_interrupt`).
        self.pending.is_some()
    }
}

impl Drop for VmxVcpu {
    fn drop(&mut self) {
        // SAFETY: the VMCS is this vCPU's; VMCLEAR writes its cached state back and makes
        // it inactive and not current, so the frame can be reused.
        let _ = unsafe { vmx_op_clear(self.vmcs) };
        let _ = CURRENT.compare_exchange(self.vmcs, 0, Ordering::SeqCst, Ordering::SeqCst);
        // The VMCS holds guest register values: zero it with the bitmaps before reuse.
        frames::zero(self.vmcs, 4096);
        frames::free(self.vmcs);
        frames::free_contiguous(self.io_bitmaps, 2);
        frames::free(self.msr_bitmap);
        vpid::release(self.vpid);
        self.regs = GuestRegs::default();
    }
}
