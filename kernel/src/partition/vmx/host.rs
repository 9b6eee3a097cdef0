//! The host's side of a VMX world switch: the VMCS host-state area filled from the
//! running CPU before every entry (so the host survives every exit with its own control
//! registers, selectors, bases, SYSENTER MSRs, EFER and PAT), what VM exit leaves wrong
//! (GDTR/IDTR limits 0xFFFF: reloaded after the exit), and INVEPT/INVVPID.

use super::vmcs::{self, Field};
use core::arch::asm;
use x86_64::registers::model_specific::Msr;

const MSR_SYSENTER_CS: u32 = 0x174;
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;
const MSR_PAT: u32 = 0x277;
const MSR_EFER: u32 = 0xC000_0080;
const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// A descriptor-table register as SGDT/SIDT store it.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
struct TableRegister {
    limit: u16,
    base: u64,
}

/// The host state the VMCS host-state area names, read from this CPU.
#[derive(Debug, Clone, Copy)]
pub struct HostState {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    selectors: [u16; 7],
    fs_base: u64,
    gs_base: u64,
    tr_base: u64,
    gdtr: TableRegister,
    idtr: TableRegister,
    sysenter: [u64; 3],
    efer: u64,
    pat: u64,
}

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: only architectural MSRs every x86-64 CPU with VMX has.
    unsafe { Msr::new(msr).read() }
}

impl HostState {
    /// Reads the running CPU's state.
    pub fn capture() -> HostState {
        let (cr0, cr3, cr4): (u64, u64, u64);
        let mut sel = [0u16; 7];
        let mut gdtr = TableRegister::default();
        let mut idtr = TableRegister::default();
        // SAFETY: reading control registers, selectors and the descriptor-table
        // registers has no side effect; SGDT/SIDT store 10 bytes into the locals.
        unsafe {
            asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
            asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
            asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
            asm!("mov {0:x}, es", out(reg) sel[0], options(nomem, nostack));
            asm!("mov {0:x}, cs", out(reg) sel[1], options(nomem, nostack));
            asm!("mov {0:x}, ss", out(reg) sel[2], options(nomem, nostack));
            asm!("mov {0:x}, ds", out(reg) sel[3], options(nomem, nostack));
            asm!("mov {0:x}, fs", out(reg) sel[4], options(nomem, nostack));
            asm!("mov {0:x}, gs", out(reg) sel[5], options(nomem, nostack));
            asm!("str {0:x}", out(reg) sel[6], options(nomem, nostack));
            asm!("sgdt [{}]", in(reg) &mut gdtr, options(nostack));
            asm!("sidt [{}]", in(reg) &mut idtr, options(nostack));
        }
        HostState {
            cr0,
            cr3,
            cr4,
            selectors: sel,
            fs_base: rdmsr(MSR_FS_BASE),
            gs_base: rdmsr(MSR_GS_BASE),
            tr_base: tss_base(gdtr, sel[6]),
            gdtr,
            idtr,
            sysenter: [rdmsr(MSR_SYSENTER_CS), rdmsr(MSR_SYSENTER_ESP), rdmsr(MSR_SYSENTER_EIP)],
            efer: rdmsr(MSR_EFER),
            pat: rdmsr(MSR_PAT),
        }
    }

    /// Fills the host-state area through `w` (HOST_RSP/HOST_RIP are the entry routine's).
    pub fn write_to_vmcs(&self, mut w: impl FnMut(Field, u64)) {
        use vmcs::*;
        w(HOST_CR0, self.cr0);
        w(HOST_CR3, self.cr3);
        w(HOST_CR4, self.cr4);
        let fields = [
            HOST_ES_SELECTOR,
            HOST_CS_SELECTOR,
            HOST_SS_SELECTOR,
            HOST_DS_SELECTOR,
            HOST_FS_SELECTOR,
            HOST_GS_SELECTOR,
            HOST_TR_SELECTOR,
        ];
        for (f, s) in fields.into_iter().zip(self.selectors) {
            // VM exit requires RPL = 0 and TI = 0 in every host selector.
            w(f, u64::from(s & !7));
        }
        w(HOST_FS_BASE, self.fs_base);
        w(HOST_GS_BASE, self.gs_base);
        w(HOST_TR_BASE, self.tr_base);
        w(HOST_GDTR_BASE, self.gdtr.base);
        w(HOST_IDTR_BASE, self.idtr.base);
        w(HOST_SYSENTER_CS, self.sysenter[0]);
        w(HOST_SYSENTER_ESP, self.sysenter[1]);
        w(HOST_SYSENTER_EIP, self.sysenter[2]);
        w(HOST_IA32_EFER, self.efer);
        w(HOST_IA32_PAT, self.pat);
    }

    /// Puts back the GDTR and IDTR limits VM exit set to 0xFFFF.
    pub fn restore_descriptor_tables(&self) {
        // SAFETY: the values SGDT/SIDT read from this CPU before the entry: the host's
        // own tables, which stay where they were.
        unsafe {
            asm!("lgdt [{}]", in(reg) &self.gdtr, options(nostack));
            asm!("lidt [{}]", in(reg) &self.idtr, options(nostack));
        }
    }
}

/// The base of the TSS that `tr` selects in the GDT at `gdtr` (a 16-byte system
/// descriptor: base 23:0 in bits 39:16, 31:24 in bits 63:56, 63:32 in the next word).
fn tss_base(gdtr: TableRegister, tr: u16) -> u64 {
    let at = gdtr.base + u64::from(tr & !7);
    if tr & !7 == 0 || u64::from(tr & !7) + 15 > u64::from(gdtr.limit) {
        return 0;
    }
    // SAFETY: both words lie inside the GDT (checked against its limit), which is the
    // host's own identity-mapped static table.
    let (lo, hi) = unsafe {
        (
            core::ptr::read_volatile(at as *const u64),
            core::ptr::read_volatile((at + 8) as *const u64),
        )
    };
    (lo >> 16) & 0xFF_FFFF | ((lo >> 56) & 0xFF) << 24 | (hi & 0xFFFF_FFFF) << 32
}

/// The MSRs a guest may set that neither VM entry nor VM exit switches: STAR, LSTAR,
/// CSTAR, SFMASK (SYSCALL/SYSRET) and KERNEL_GS_BASE (SWAPGS).
pub const SWAPPED_MSRS: [u32; 5] =
    [0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084, MSR_KERNEL_GS_BASE];

/// Exchanges the CPU's values of [`SWAPPED_MSRS`] with `values`: before an entry
/// `values` holds the guest's and receives the host's, after the exit the reverse.
pub fn swap_msrs(values: &mut [u64; 5]) {
    for (value, msr) in values.iter_mut().zip(SWAPPED_MSRS) {
        let mut m = Msr::new(msr);
        // SAFETY: the host never uses SYSCALL or SWAPGS (it has no user mode), so these
        // MSRs only matter to the guest while it runs; every value is either the host's
        // own earlier one or a guest's that `set_guest_msr` checked (canonical
        // addresses, SFMASK's reserved half clear), which WRMSR accepts.
        unsafe {
            let old = m.read();
            m.write(*value);
            *value = old;
        }
    }
}

/// INVEPT of the partition with EPT pointer `eptp` (single context), or of every
/// context when single-context is not supported.
pub fn invept(eptp: u64, single: bool) {
    let descriptor: [u64; 2] = [eptp, 0];
    let kind: u64 = if single { 1 } else { 2 };
    // SAFETY: in VMX root operation, INVEPT only drops cached EPT translations; the
    // descriptor is a 16-byte local, the type one `enable` checked is supported.
    unsafe { asm!("invept {}, [{}]", in(reg) kind, in(reg) &descriptor, options(nostack)) };
}

/// INVVPID of `vpid`'s guest TLB entries (single context), or of every VPID.
pub fn invvpid(vpid: u16, single: bool) {
    let descriptor: [u64; 2] = [u64::from(vpid), 0];
    let kind: u64 = if single { 1 } else { 2 };
    // SAFETY: as for `invept`: INVVPID only drops guest TLB entries.
    unsafe { asm!("invvpid {}, [{}]", in(reg) kind, in(reg) &descriptor, options(nostack)) };
}

/// What a VMX guest run must leave unchanged in the host beyond what the VMCS host
/// state restores by construction, as (key, value) pairs for the hostile suite: the
/// MSRs VM exit does not switch or switches from the host-state area (keyed by MSR
/// number), the FS/GS/LDTR selectors (keys 1-3) and the GDTR/IDTR limits VM exit sets
/// to 0xFFFF (key 4, GDTR limit << 16 | IDTR limit).
pub fn snapshot_fields() -> [(usize, u64); 16] {
    let msrs = [
        MSR_FS_BASE,
        MSR_GS_BASE,
        MSR_KERNEL_GS_BASE,
        0xC000_0081, // STAR
        0xC000_0082, // LSTAR
        0xC000_0083, // CSTAR
        0xC000_0084, // SFMASK
        MSR_SYSENTER_CS,
        MSR_SYSENTER_ESP,
        MSR_SYSENTER_EIP,
        MSR_EFER,
        MSR_PAT,
    ];
    let mut out = [(0usize, 0u64); 16];
    for (slot, msr) in out.iter_mut().zip(msrs) {
        *slot = (msr as usize, rdmsr(msr));
    }
    let (fs, gs, ldtr): (u16, u16, u16);
    let mut gdtr = TableRegister::default();
    let mut idtr = TableRegister::default();
    // SAFETY: reading selectors and the descriptor-table registers has no side effect.
    unsafe {
        asm!("mov {0:x}, fs", out(reg) fs, options(nomem, nostack));
        asm!("mov {0:x}, gs", out(reg) gs, options(nomem, nostack));
        asm!("sldt {0:x}", out(reg) ldtr, options(nomem, nostack));
        asm!("sgdt [{}]", in(reg) &mut gdtr, options(nostack));
        asm!("sidt [{}]", in(reg) &mut idtr, options(nostack));
    }
    let limits = u64::from(gdtr.limit) << 16 | u64::from(idtr.limit);
    out[12] = (1, u64::from(fs));
    out[13] = (2, u64::from(gs));
    out[14] = (3, u64::from(ldtr));
    out[15] = (4, limits);
    out
}
