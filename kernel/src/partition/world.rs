//! The world switch around VMRUN: the processor state VMRUN and #VMEXIT do not swap.
//!
//! VMRUN swaps only what the VMCB save area's "VMRUN" part holds (segments ES/CS/SS/DS,
//! GDTR/IDTR, CR0/CR3/CR4, EFER, RFLAGS/RIP/RSP/RAX, DR6/DR7, PAT). Everything else a
//! guest can change stays in the processor and would reach the host and the next guest:
//!
//! | state | how it is switched |
//! | --- | --- |
//! | FS, GS (with their hidden bases), TR, LDTR, KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SFMASK, SYSENTER_CS/ESP/EIP | `vmsave` of the host into [`HostFacts`]'s page, `vmload` of the guest's VMCB before VMRUN; `vmsave` of the guest's VMCB, `vmload` of the host page after, all with GIF clear (no host interrupt ever runs on a guest TR) |
//! | x87, SSE, AVX (and AVX-512, MPX, PKRU when the CPU has them) | `xsave` of the host, `xrstor` of the vCPU's own area before; `xsave` of the vCPU, `xrstor` of the host after; the areas are sized from CPUID leaf 0xD |
//! | XCR0 | the guest's value (only ever set through the validated XSETBV intercept) is loaded before VMRUN; the host runs with [`HostFacts::mask`] |
//! | DR0-DR3 (DR6/DR7 are in the VMCB) | the guest's loaded before, saved after; the host's DR0-DR3, DR6 and DR7 restored after |
//!
//! Every other MSR is intercepted (the MSR permission map is all ones) and so never
//! changes under a guest.
//!
//! A new vCPU (and a restarted one) starts from [`GuestWorld::reset`]: x87, SSE and AVX in
//! their XSAVE init state (FCW 0x37F, every register 0, MXCSR 0x1F80), PKRU 0, XCR0 = 1
//! (x87 only, the architectural reset value), DR0-DR3 0, and (in the VMCB, see
//! `SvmVcpu::enter_long_mode`) FS/GS/KERNEL_GS_BASE 0, the SYSCALL/SYSENTER MSRs 0, TR
//! selector 0 as a busy 64-bit TSS at base 0, LDTR selector 0.
//!
//! The host kernel is built without SSE; it needs CR4.OSXSAVE only for the switch itself.

use super::svm::SvmError;
use crate::mem::frames;
use core::arch::asm;
use core::arch::x86_64::{__cpuid_count, CpuidResult};

/// XCR0 components switched (and so the only ones a guest may enable): x87 (0), SSE (1),
/// AVX (2), MPX (3, 4), AVX-512 (5, 6, 7), PKRU (9), each only when the CPU supports it.
/// Not AMX tile state (17, 18: it needs the XFD permission model) and no supervisor
/// (IA32_XSS) component: guests cannot write IA32_XSS (every MSR is intercepted).
const SWITCHABLE: u64 = 0x2FF;
/// CR4.OSFXSR, CR4.OSXMMEXCPT, CR4.OSXSAVE.
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
/// MXCSR's power-on value: every SIMD exception masked, round to nearest.
pub const MXCSR_INIT: u32 = 0x1F80;
/// Offset of MXCSR in the legacy region of an XSAVE area.
const XSAVE_MXCSR: u64 = 24;
/// XCR0 at reset: x87 only.
pub const XCR0_INIT: u64 = 1;
/// The x87 control word at reset: every exception masked, 64-bit precision.
const FCW_INIT: u16 = 0x37F;

/// What the host set up once for every switch.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts {
    /// XSAVE exists (else the switch uses FXSAVE/FXRSTOR: x87 and SSE, and XCR0 does
    /// not exist; Nehalem, e.g. Bochs' corei5_lynnfield_750).
    pub xsave: bool,
    /// XCR0 while the host runs, and the XSAVE/XRSTOR mask of every switch.
    pub mask: u64,
    /// Bytes of an XSAVE area for `mask` (CPUID.(0xD,0).EBX with XCR0 = `mask`).
    pub area_size: u64,
    /// The host's XSAVE area (64-byte aligned, in frames the host keeps).
    host_area: u64,
    /// The page `vmsave` stores the host's FS/GS/TR/LDTR and SYSCALL MSRs in.
    host_save: u64,
}

static FACTS: spin::Once<Result<HostFacts, SvmError>> = spin::Once::new();

/// Off only in the hostile suite's control runs: with it off nothing below is switched,
/// which is how that suite shows its checks can fail. Only in builds with the kernel's
/// `test-controls` feature (the debug builds the QEMU suites boot), never in `--release`.
#[cfg(feature = "test-controls")]
static SWITCH: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Test-only knob (`test-controls` builds only): turns the world switch off (`false`) or
/// back on. The hostile suite's control runs use it to show a guest's state would
/// otherwise reach the next one.
#[cfg(feature = "test-controls")]
pub fn set_switch_for_test(on: bool) {
    SWITCH.store(on, core::sync::atomic::Ordering::SeqCst);
}

/// Whether the world switch runs: off only in a `test-controls` build's control runs.
#[cfg(feature = "test-controls")]
fn switch_on() -> bool {
    SWITCH.load(core::sync::atomic::Ordering::SeqCst)
}

/// Whether the world switch runs: always, in a build without the test controls.
#[cfg(not(feature = "test-controls"))]
fn switch_on() -> bool {
    true
}

fn cpuid(leaf: u32, sub: u32) -> CpuidResult {
    __cpuid_count(leaf, sub)
}

fn pages(bytes: u64) -> u64 {
    bytes.div_ceil(4096).max(1)
}

/// Sets the host up for the switch once: CR4.OSFXSR/OSXMMEXCPT/OSXSAVE, XCR0 = every
/// switchable component the CPU has, the host's XSAVE area and `vmsave` page. Without
/// XSAVE: CR4.OSFXSR/OSXMMEXCPT and 512-byte FXSAVE areas (x87 and SSE).
pub fn host_facts() -> Result<HostFacts, SvmError> {
    *FACTS.call_once(|| {
        if cpuid(1, 0).ecx & (1 << 26) == 0 {
            return fxsave_facts();
        }
        let d = cpuid(0xD, 0);
        let mask = ((d.edx as u64) << 32 | d.eax as u64) & SWITCHABLE;
        // SAFETY: CR4.OSXSAVE and the FXSR bits only make XSAVE/XSETBV/SSE usable (XSAVE
        // was checked above); `mask` holds only components CPUID.(0xD,0) reports and
        // includes x87, so XSETBV accepts it. The host code never uses SSE state.
        unsafe {
            let cr4: u64;
            asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
            let cr4 = cr4 | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE;
            asm!("mov cr4, {}", in(reg) cr4, options(nomem, nostack));
            xsetbv(mask);
        }
        let area_size = cpuid(0xD, 0).ebx as u64;
        let host_area =
            frames::alloc_contiguous(pages(area_size), 4096).ok_or(SvmError::OutOfFrames)?;
        frames::zero(host_area, pages(area_size) * 4096);
        let Some(host_save) = frames::alloc_zeroed() else {
            frames::free_contiguous(host_area, pages(area_size));
            return Err(SvmError::OutOfFrames);
        };
        log::info!(
            "world switch: XCR0 components {mask:#x} switched in {area_size}-byte XSAVE areas, DR0-DR3; FS/GS/TR/LDTR/SYSCALL MSRs by vmsave/vmload (SVM) or the VMCS host state with STAR/LSTAR/CSTAR/SFMASK/KERNEL_GS_BASE swapped around each entry (VMX)"
        );
        Ok(HostFacts { xsave: true, mask, area_size, host_area, host_save })
    })
}

/// [`host_facts`] on a CPU without XSAVE (FXSR is architectural on x86-64).
fn fxsave_facts() -> Result<HostFacts, SvmError> {
    if cpuid(1, 0).edx & (1 << 24) == 0 {
        return Err(SvmError::NoXsave);
    }
    // SAFETY: CR4.OSFXSR/OSXMMEXCPT only make FXSAVE/SSE usable; the host never uses SSE.
    unsafe {
        let cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        asm!("mov cr4, {}", in(reg) cr4 | CR4_OSFXSR | CR4_OSXMMEXCPT, options(nomem, nostack));
    }
    let host_area = frames::alloc_zeroed().ok_or(SvmError::OutOfFrames)?;
    let Some(host_save) = frames::alloc_zeroed() else {
        frames::free(host_area);
        return Err(SvmError::OutOfFrames);
    };
    log::info!(
        "world switch: no XSAVE: x87/SSE switched in 512-byte FXSAVE areas, DR0-DR3; FS/GS/TR/LDTR/SYSCALL MSRs by vmsave/vmload (SVM) or the VMCS host state with STAR/LSTAR/CSTAR/SFMASK/KERNEL_GS_BASE swapped around each entry (VMX)"
    );
    Ok(HostFacts { xsave: false, mask: XCR0_INIT | 2, area_size: 512, host_area, host_save })
}

/// # Safety
/// `area` is a 16-byte aligned 512-byte area the caller owns; CR4.OSFXSR is set.
unsafe fn fxsave(area: u64) {
    // SAFETY: per the caller.
    unsafe { asm!("fxsave64 [{}]", in(reg) area, options(nostack)) }
}

/// # Safety
/// As for [`fxsave`], and `area` holds an image FXSAVE wrote or [`GuestWorld::reset`] made.
unsafe fn fxrstor(area: u64) {
    // SAFETY: per the caller.
    unsafe { asm!("fxrstor64 [{}]", in(reg) area, options(nostack)) }
}

/// # Safety
/// CR4.OSXSAVE is set and `value` is a valid XCR0 for this CPU.
unsafe fn xsetbv(value: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack));
    }
}

fn xgetbv() -> u64 {
    if !host_facts().is_ok_and(|f| f.xsave) {
        return XCR0_INIT | 2;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: only called once `host_facts` set CR4.OSXSAVE; XGETBV(0) only reads XCR0.
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (hi as u64) << 32 | lo as u64
}

/// # Safety
/// `area` is a 64-byte aligned XSAVE area of at least [`HostFacts::area_size`] bytes
/// owned by the caller, and XCR0 holds `mask`.
unsafe fn xsave(area: u64, mask: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("xsave64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
             options(nostack));
    }
}

/// # Safety
/// As for [`xsave`], and `area` holds an image XSAVE wrote or [`GuestWorld::reset`] made.
unsafe fn xrstor(area: u64, mask: u64) {
    // SAFETY: per the caller.
    unsafe {
        asm!("xrstor64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
             options(nostack));
    }
}

/// DR0-DR3, DR6, DR7.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DebugRegs {
    /// DR0-DR3.
    pub dr: [u64; 4],
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
}

/// Reads the debug registers.
pub fn read_debug() -> DebugRegs {
    let mut d = DebugRegs::default();
    // SAFETY: reading debug registers at CPL 0 has no side effect.
    unsafe {
        asm!("mov {}, dr0", out(reg) d.dr[0], options(nomem, nostack));
        asm!("mov {}, dr1", out(reg) d.dr[1], options(nomem, nostack));
        asm!("mov {}, dr2", out(reg) d.dr[2], options(nomem, nostack));
        asm!("mov {}, dr3", out(reg) d.dr[3], options(nomem, nostack));
        asm!("mov {}, dr6", out(reg) d.dr6, options(nomem, nostack));
        asm!("mov {}, dr7", out(reg) d.dr7, options(nomem, nostack));
    }
    d
}

/// # Safety
/// The host sets no breakpoints of its own, so any DR0-DR3 value is harmless; `dr7`
/// must be the host's own value (or 0x400).
unsafe fn write_dr03(dr: &[u64; 4]) {
    // SAFETY: per the caller; DR0-DR3 only take effect through DR7.
    unsafe {
        asm!("mov dr0, {}", in(reg) dr[0], options(nomem, nostack));
        asm!("mov dr1, {}", in(reg) dr[1], options(nomem, nostack));
        asm!("mov dr2, {}", in(reg) dr[2], options(nomem, nostack));
        asm!("mov dr3, {}", in(reg) dr[3], options(nomem, nostack));
    }
}

/// The extended state of one vCPU: its XSAVE area, XCR0 and DR0-DR3.
pub struct GuestWorld {
    area: u64,
    pages: u64,
    /// The guest's XCR0 (validated by the XSETBV intercept).
    pub xcr0: u64,
    dr: [u64; 4],
}

impl GuestWorld {
    /// A fresh vCPU's state, in its clean start state ([`GuestWorld::reset`]).
    pub fn new() -> Result<GuestWorld, SvmError> {
        let facts = host_facts()?;
        let pages = pages(facts.area_size);
        let area = frames::alloc_contiguous(pages, 4096).ok_or(SvmError::OutOfFrames)?;
        let mut w = GuestWorld { area, pages, xcr0: XCR0_INIT, dr: [0; 4] };
        w.reset();
        Ok(w)
    }

    /// The documented clean start state: XSAVE header all zero (every component in its
    /// init state on XRSTOR), MXCSR 0x1F80 (XRSTOR loads MXCSR from the legacy region
    /// whenever SSE or AVX is requested), XCR0 = 1, DR0-DR3 = 0.
    pub fn reset(&mut self) {
        frames::zero(self.area, self.pages * 4096);
        // SAFETY: the area is this vCPU's own frames, identity-mapped; offset 24 is the
        // 4-byte MXCSR field of the legacy region.
        unsafe { core::ptr::write_volatile((self.area + XSAVE_MXCSR) as *mut u32, MXCSR_INIT) };
        // FCW's init value at offset 0, for FXRSTOR (XRSTOR of an all-zero header puts
        // x87 in its init state whatever the legacy region holds).
        // SAFETY: as above; offset 0 is the 2-byte FCW field.
        unsafe { core::ptr::write_volatile(self.area as *mut u16, FCW_INIT) };
        self.xcr0 = XCR0_INIT;
        self.dr = [0; 4];
    }

    /// Loads the guest's extended state and returns the host's debug registers, for
    /// [`GuestWorld::leave`]. Call right before VMRUN; host code in between (interrupt
    /// handlers) must not use SSE or debug registers, which the host kernel never does.
    pub fn enter(&self) -> Option<DebugRegs> {
        if !switch_on() {
            return None;
        }
        let facts = host_facts().ok()?;
        let host = read_debug();
        if !facts.xsave {
            // SAFETY: both areas are page-aligned frames of at least 512 bytes, CR4.OSFXSR
            // is set; the guest area holds an FXSAVE image or `reset`'s init image; the
            // host sets no breakpoints.
            unsafe {
                fxsave(facts.host_area);
                fxrstor(self.area);
                write_dr03(&self.dr);
            }
            return Some(host);
        }
        // SAFETY: both areas are 64-byte aligned frames sized from CPUID for `facts.mask`,
        // XCR0 holds `facts.mask` (the host's value); the guest area holds an XSAVE image
        // or `reset`'s init image; the guest's XCR0 was validated against `facts.mask`;
        // the host sets no breakpoints.
        unsafe {
            xsave(facts.host_area, facts.mask);
            xrstor(self.area, facts.mask);
            write_dr03(&self.dr);
            xsetbv(self.xcr0);
        }
        Some(host)
    }

    /// Saves the guest's extended state and restores the host's (after #VMEXIT).
    pub fn leave(&mut self, host: Option<DebugRegs>) {
        let (Some(host), Ok(facts)) = (host, host_facts()) else {
            return;
        };
        self.dr = read_debug().dr;
        if !facts.xsave {
            // SAFETY: as in `enter`; the host's debug registers are its own values.
            unsafe {
                fxsave(self.area);
                fxrstor(facts.host_area);
                write_dr03(&host.dr);
                asm!("mov dr6, {}", in(reg) host.dr6, options(nomem, nostack));
                asm!("mov dr7, {}", in(reg) host.dr7, options(nomem, nostack));
            }
            return;
        }
        // The guest could only change XCR0 through the intercepted XSETBV, but reading it
        // back keeps the switch right even on a CPU that did not intercept it.
        self.xcr0 = xgetbv();
        // SAFETY: as in `enter`, with XCR0 set back to the host's `facts.mask` before
        // either XSAVE area is touched; the host's debug registers are its own values.
        unsafe {
            xsetbv(facts.mask);
            xsave(self.area, facts.mask);
            xrstor(facts.host_area, facts.mask);
            write_dr03(&host.dr);
            asm!("mov dr6, {}", in(reg) host.dr6, options(nomem, nostack));
            asm!("mov dr7, {}", in(reg) host.dr7, options(nomem, nostack));
        }
    }
}

impl Drop for GuestWorld {
    fn drop(&mut self) {
        // The area holds guest register values: zero it before the frames are reused.
        frames::zero(self.area, self.pages * 4096);
        frames::free_contiguous(self.area, self.pages);
    }
}

/// The host `vmsave` page when the switch is on, else 0 (the VMRUN routine then skips
/// `vmsave`/`vmload`).
pub fn host_save_page() -> u64 {
    match (switch_on(), host_facts()) {
        (true, Ok(f)) => f.host_save,
        _ => 0,
    }
}

/// The host's XCR0 and what `vmsave` stores of it (FS/GS/TR/LDTR and the SYSCALL and
/// SYSENTER MSRs), for the hostile suite: a guest run must leave all of it unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    /// The `vmsave` fields, as (VMCB offset, 8-byte value) pairs (under VMX: see
    /// [`host_snapshot`]).
    pub fields: [(usize, u64); 16],
    /// XCR0.
    pub xcr0: u64,
    /// Debug registers.
    pub debug: DebugRegs,
    /// The TR selector (`str`).
    pub tr: u16,
}

/// `vmsave` into a scratch page, read back the fields it stored.
/// Under VMX, whose VM exit restores FS/GS/TR/LDTR from the VMCS host state, the
/// snapshot holds `vmx::host::snapshot_fields` instead (the MSRs, selectors and
/// descriptor-table limits a VMX run could change).
pub fn host_snapshot() -> Result<HostSnapshot, SvmError> {
    if super::backend::Backend::detect() == Some(super::backend::Backend::Vmx) {
        host_facts()?;
        let tr: u16;
        // SAFETY: STR only reads the task register's selector.
        unsafe { asm!("str {0:x}", out(reg) tr, options(nomem, nostack)) };
        let fields = super::vmx::host::snapshot_fields();
        return Ok(HostSnapshot { fields, xcr0: xgetbv(), debug: read_debug(), tr });
    }
    super::svm::enable()?;
    let page = frames::alloc_zeroed().ok_or(SvmError::OutOfFrames)?;
    // SAFETY: SVM is enabled (EFER.SVME, by `svm::enable` above); `page` is a
    // page-aligned frame this function owns, into which VMSAVE only stores.
    unsafe { asm!("vmsave rax", in("rax") page, options(nostack)) };
    let mut fields = [(0usize, 0u64); 16];
    for (i, off) in super::svm::VMSAVE_FIELDS.iter().enumerate() {
        // SAFETY: `off` is an 8-byte field inside `page`, written by VMSAVE above.
        fields[i] = (*off, unsafe { core::ptr::read_volatile((page + *off as u64) as *const u64) });
    }
    frames::free(page);
    let tr: u16;
    // SAFETY: STR only reads the task register's selector.
    unsafe { asm!("str {0:x}", out(reg) tr, options(nomem, nostack)) };
    Ok(HostSnapshot { fields, xcr0: xgetbv(), debug: read_debug(), tr })
}

/// Puts back what a control run without the switch let a guest leave in the host: the
/// `vmsave` state of `snap` (through a page rebuilt from it), XCR0 and DR0-DR3. Only with
/// the test controls (nothing else turns the switch off).
#[cfg(feature = "test-controls")]
pub fn restore_host(snap: &HostSnapshot) -> Result<(), SvmError> {
    let page = frames::alloc_zeroed().ok_or(SvmError::OutOfFrames)?;
    // SAFETY: a fresh page this function owns; VMSAVE fills every field VMLOAD reads
    // (the fields copied below are overwritten with the snapshot's values).
    unsafe { asm!("vmsave rax", in("rax") page, options(nostack)) };
    for (off, v) in snap.fields {
        // SAFETY: as in `host_snapshot`.
        unsafe { core::ptr::write_volatile((page + off as u64) as *mut u64, v) };
    }
    // SAFETY: the page holds the host's own earlier state (taken by `host_snapshot` with
    // VMSAVE); loading it puts the host's TR/LDTR/FS/GS/MSRs back. XCR0 is the host's.
    unsafe {
        asm!("clgi", "vmload rax", "stgi", in("rax") page, options(nostack));
        if host_facts().is_ok_and(|f| f.xsave) {
            xsetbv(snap.xcr0);
        }
        write_dr03(&snap.debug.dr);
    }
    frames::free(page);
    Ok(())
}
