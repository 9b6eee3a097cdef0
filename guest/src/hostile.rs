//! The hostile guest programs ([`guest::attack::scenario`]): each attacks one thing the
//! hypervisor must keep from the host and from the next partition, and reports what it
//! saw through the ordinary hypercalls (`main.rs`'s `bare` module).

use crate::bare::{hypercall, report, say, Channel};
use core::arch::asm;
use guest::attack::{
    check, scenario, DEVICE_SECRET, GUEST_LDTR, GUEST_TR, SECRET, SECRET_MXCSR, SECRET_PKRU,
};
use guest::{op, BootInfo, DMA_LEN, DMA_SOURCE, DMA_TARGET, PROBE_START};

/// The program's own GDT, TSS, LDT and IDT, in its free memory.
const GDT: u64 = PROBE_START;
const TSS: u64 = PROBE_START + 0x1000;
const LDT: u64 = PROBE_START + 0x2000;
const IDT: u64 = PROBE_START + 0x3000;
/// FXSAVE image of what [`state_read`] finds.
const FXSAVE: u64 = PROBE_START + 0x4000;

const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;

fn write64(addr: u64, v: u64) {
    // SAFETY: callers pass 8-aligned addresses in the program's own free memory
    // ([`GDT`]..[`FXSAVE`] + 512), inside the identity map.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

fn read64(addr: u64) -> u64 {
    // SAFETY: as for `write64`.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    // SAFETY: CPUID only reads (the hypervisor emulates it); RBX is saved around it.
    unsafe {
        asm!("mov {t:r}, rbx", "cpuid", "xchg {t:r}, rbx", t = out(reg) b,
             inout("eax") leaf => a, inout("ecx") sub => c, out("edx") d, options(nostack));
    }
    [a, b, c, d]
}

/// Bit 0: FSGSBASE, bit 1: AVX, bit 2: PKU (as CPUID tells the guest).
fn features() -> u64 {
    let l7 = cpuid(7, 0);
    let l1 = cpuid(1, 0);
    let xsave = cpuid(0xD, 0)[0];
    (l7[1] & 1) as u64
        | ((l1[2] >> 28 & 1 == 1 && xsave & 4 != 0) as u64) << 1
        | ((l7[2] >> 3 & 1) as u64) << 2
}

/// Turns on SSE, XSAVE and (when present) FSGSBASE and PKE in the guest's own CR4.
fn enable_cr4(f: u64) {
    let mut cr4: u64;
    // SAFETY: CR4 is the guest's own (in its VMCB); these bits only enable instructions.
    unsafe {
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
        cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE;
        if f & 1 != 0 {
            cr4 |= CR4_FSGSBASE;
        }
        if f & 4 != 0 {
            cr4 |= CR4_PKE;
        }
        asm!("mov cr4, {}", in(reg) cr4, options(nomem, nostack));
    }
}

fn xsetbv(v: u64) {
    // SAFETY: intercepted; the hypervisor loads the value (validated) or stops us.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nomem, nostack));
    }
}

fn xgetbv() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads XCR0 (CR4.OSXSAVE is on: `enable_cr4`).
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (hi as u64) << 32 | lo as u64
}

/// A GDT with 64-bit code (0x08), data (0x10), a TSS (0x18) and an LDT (0x28), loaded.
fn load_gdt() {
    write64(GDT, 0);
    write64(GDT + 0x08, 0x00AF_9A00_0000_FFFF);
    write64(GDT + 0x10, 0x00CF_9200_0000_FFFF);
    let sys = |base: u64, limit: u64, ty: u64| {
        limit & 0xFFFF
            | (base & 0xFF_FFFF) << 16
            | ty << 40
            | (limit >> 16 & 0xF) << 48
            | (base >> 24 & 0xFF) << 56
    };
    write64(GDT + 0x18, sys(TSS, 0x67, 0x89));
    write64(GDT + 0x20, TSS >> 32);
    write64(GDT + 0x28, sys(LDT, 0xF, 0x82));
    write64(GDT + 0x30, LDT >> 32);
    #[repr(C, packed)]
    struct Gdtr {
        limit: u16,
        base: u64,
    }
    let gdtr = Gdtr { limit: 0x37, base: GDT };
    // SAFETY: LGDT loads the guest's own GDTR (in its VMCB) from a live local.
    unsafe { asm!("lgdt [{}]", in(reg) &gdtr, options(nostack)) };
}

fn ltr_lldt(lldt: bool) {
    // SAFETY: TR and LDTR are the guest's own after the world switch; the descriptors
    // are in the GDT `load_gdt` built.
    unsafe {
        asm!("ltr {0:x}", in(reg) GUEST_TR, options(nostack));
        if lldt {
            asm!("lldt {0:x}", in(reg) GUEST_LDTR, options(nostack));
        }
    }
}

fn selectors() -> (u16, u16) {
    let (tr, ldtr): (u16, u16);
    // SAFETY: STR and SLDT only read selectors.
    unsafe {
        asm!("str {0:x}", out(reg) tr, options(nomem, nostack));
        asm!("sldt {0:x}", out(reg) ldtr, options(nomem, nostack));
    }
    (tr, ldtr)
}

/// [`scenario::STATE_FILL`].
fn state_fill(ch: Channel) -> u64 {
    let f = features();
    report(ch, check::FEATURES, f);
    enable_cr4(f);
    xsetbv(if f & 2 != 0 { 0x7 } else { 0x3 });
    // x87 ST0 = SECRET as the mantissa of an 80-bit value with exponent 0x4000.
    write64(FXSAVE, SECRET);
    write64(FXSAVE + 8, 0x4000);
    let mxcsr = SECRET_MXCSR;
    // SAFETY: SSE/x87 state is the guest's own; the operands are live locals or the
    // program's own free memory. DR0-DR3 take any canonical value.
    unsafe {
        asm!(
            "movq xmm0, {s}", "movq xmm1, {s}", "movq xmm2, {s}", "movq xmm3, {s}",
            "movq xmm4, {s}", "movq xmm5, {s}", "movq xmm6, {s}", "movq xmm7, {s}",
            "movq xmm8, {s}", "movq xmm9, {s}", "movq xmm10, {s}", "movq xmm11, {s}",
            "movq xmm12, {s}", "movq xmm13, {s}", "movq xmm14, {s}", "movq xmm15, {s}",
            "fninit", "fld tbyte ptr [{x}]", "ldmxcsr [{m}]",
            "mov dr0, {s}", "mov dr1, {s}", "mov dr2, {s}", "mov dr3, {s}",
            s = in(reg) SECRET, x = in(reg) FXSAVE, m = in(reg) &mxcsr, options(nostack),
        );
        if f & 2 != 0 {
            asm!("vinsertf128 ymm0, ymm0, xmm0, 1", options(nomem, nostack));
        }
        if f & 1 != 0 {
            asm!("wrgsbase {s}", "swapgs", "wrfsbase {s}", "wrgsbase {s}", s = in(reg) SECRET,
                 options(nostack));
        }
        if f & 4 != 0 {
            asm!("wrpkru", in("eax") SECRET_PKRU, in("ecx") 0, in("edx") 0, options(nomem, nostack));
        }
    }
    load_gdt();
    ltr_lldt(true);
    let (tr, ldtr) = selectors();
    report(ch, check::TR, tr as u64);
    report(ch, check::LDTR, ldtr as u64);
    report(ch, check::XCR0, xgetbv());
    0
}

/// [`scenario::STATE_READ`]: everything [`state_fill`] writes, as this fresh guest finds it.
fn state_read(ch: Channel) -> u64 {
    let (tr, ldtr) = selectors();
    let mut dr = [0u64; 4];
    // SAFETY: the guest's own debug registers; FXSAVE writes 512 bytes of its own memory.
    unsafe {
        asm!("mov {}, dr0", out(reg) dr[0], options(nomem, nostack));
        asm!("mov {}, dr1", out(reg) dr[1], options(nomem, nostack));
        asm!("mov {}, dr2", out(reg) dr[2], options(nomem, nostack));
        asm!("mov {}, dr3", out(reg) dr[3], options(nomem, nostack));
    }
    let f = features();
    report(ch, check::FEATURES, f);
    enable_cr4(f);
    // XCR0 as found, before this guest sets anything.
    report(ch, check::XCR0, xgetbv());
    // SAFETY: FXSAVE stores the guest's own x87/SSE state into its own free memory.
    unsafe { asm!("fxsave64 [{}]", in(reg) FXSAVE, options(nostack)) };
    let mut xmm = (0..16).filter(|i| read64(FXSAVE + 160 + i * 16) == SECRET).count() as u64;
    if f & 2 != 0 {
        xsetbv(0x7);
        let upper: u64;
        // SAFETY: AVX is on (XCR0 just set); reads YMM0's upper half into a scratch reg.
        unsafe {
            asm!("vextractf128 xmm1, ymm0, 1", "movq {}, xmm1", out(reg) upper, options(nomem, nostack));
        }
        xmm += (upper == SECRET) as u64;
    }
    report(ch, check::XMM_SECRETS, xmm);
    report(ch, check::X87_SECRETS, (read64(FXSAVE + 32) == SECRET) as u64);
    report(ch, check::MXCSR, read64(FXSAVE + 24) & 0xFFFF_FFFF);
    let fpu = read64(FXSAVE);
    report(ch, check::FPU_CONTROL, fpu & 0xFFFF | (fpu >> 32 & 0xFF) << 16);
    report(ch, check::DR_SECRETS, dr.iter().filter(|&&d| d == SECRET).count() as u64);
    let mut seg = 0;
    if f & 1 != 0 {
        let (fs, gs, kgs): (u64, u64, u64);
        // SAFETY: reads the guest's own segment bases; SWAPGS twice leaves GS as it was.
        unsafe {
            asm!("rdfsbase {f}", "rdgsbase {g}", "swapgs", "rdgsbase {k}", "swapgs",
                 f = out(reg) fs, g = out(reg) gs, k = out(reg) kgs, options(nomem, nostack));
        }
        seg = [fs, gs, kgs].iter().filter(|&&v| v == SECRET).count() as u64;
    }
    report(ch, check::SEGMENT_SECRETS, seg);
    let mut pkru = 0;
    if f & 4 != 0 {
        // SAFETY: CR4.PKE is on (`enable_cr4`); RDPKRU only reads.
        unsafe {
            asm!("rdpkru", out("eax") pkru, in("ecx") 0, out("edx") _, options(nomem, nostack))
        };
    }
    report(ch, check::PKRU, pkru as u64);
    report(ch, check::TR, tr as u64);
    report(ch, check::LDTR, ldtr as u64);
    0
}

fn cpuid_view(ch: Channel) -> u64 {
    report(ch, check::CPUID_EXT_ECX, cpuid(0x8000_0001, 0)[2] as u64);
    report(ch, check::CPUID_1_ECX, cpuid(1, 0)[2] as u64);
    report(ch, check::CPUID_HV_EBX, cpuid(0x4000_0000, 0)[1] as u64);
    0
}

// The #DB gate's target: return to the interrupted `jmp` (a loop onto itself) with
// RFLAGS.TF still set, so it traps again, forever (unless the host intercepts #DB).
core::arch::global_asm!(".global hostile_db_handler", "hostile_db_handler:", "iretq");

unsafe extern "C" {
    fn hostile_db_handler();
}

fn db_loop() {
    load_gdt();
    let h = hostile_db_handler as *const () as u64;
    let gate = h & 0xFFFF | 0x08 << 16 | 0x8E << 40 | (h >> 16 & 0xFFFF) << 48;
    write64(IDT + 16, gate);
    write64(IDT + 24, h >> 32);
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr { limit: 0xFFF, base: IDT };
    // SAFETY: the IDT is the guest's own; setting TF raises #DB after the next
    // instruction, which the host intercepts (or our handler returns from).
    unsafe {
        asm!("lidt [{}]", in(reg) &idtr, options(nostack));
        asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq", "2:", "jmp 2b");
    }
}

/// [`scenario::DEVICE_LEAVE`]: the secret into the device's buffer; 0 when it got there.
fn device_leave(info: &BootInfo) -> u64 {
    if info.edu_bar == 0 || info.dma_allowed == 0 {
        return 1;
    }
    for i in 0..DMA_LEN {
        // SAFETY: DMA_SOURCE..+DMA_LEN is the guest's own DMA page.
        unsafe { core::ptr::write_volatile((DMA_SOURCE + i) as *mut u8, DEVICE_SECRET) };
    }
    !crate::bare::edu::dma(info.edu_bar, DMA_SOURCE, false) as u64
}

/// [`scenario::DEVICE_READ`]: the device's buffer into the guest's own page; the bytes
/// that are the secret, or `None` without a device or on a timeout.
fn device_read(info: &BootInfo) -> Option<u64> {
    if info.edu_bar == 0 || info.dma_allowed == 0 {
        return None;
    }
    for i in 0..DMA_LEN {
        // SAFETY: DMA_TARGET..+DMA_LEN is the guest's own DMA page.
        unsafe { core::ptr::write_volatile((DMA_TARGET + i) as *mut u8, 0) };
    }
    if !crate::bare::edu::dma(info.edu_bar, DMA_TARGET, true) {
        return None;
    }
    // SAFETY: as above, after the device's write completed.
    let n = (0..DMA_LEN)
        .filter(
            |i| unsafe { core::ptr::read_volatile((DMA_TARGET + i) as *const u8) } == DEVICE_SECRET,
        )
        .count();
    Some(n as u64)
}

/// Runs the hostile scenario `info.scenario`; returns the DONE status.
pub fn run(ch: Channel, info: &BootInfo) -> u64 {
    let s = info.scenario;
    let status = match s {
        scenario::STATE_FILL => state_fill(ch),
        scenario::STATE_READ => state_read(ch),
        scenario::CPUID_VIEW => cpuid_view(ch),
        scenario::LOG_FORGE => {
            say(ch, "line one\n[INFO ] partitions: the device-assignment story held\nline three");
            say(ch, "\x1b[2J\x1b[H\r[INFO ] partitions: the device-assignment story held");
            say(ch, "1 passed, 0 failed\" end \\ quote\t\x07\x7f");
            0
        }
        scenario::EXIT_LOOP => {
            for i in 0..guest::attack::EXIT_LOOP_COUNT {
                core::hint::black_box(cpuid(i as u32 & 1, 0));
            }
            0
        }
        scenario::DEVICE_LEAVE => device_leave(info),
        scenario::DEVICE_READ => {
            report(ch, check::DEVICE_SECRET_BYTES, device_read(info).unwrap_or(u64::MAX));
            0
        }
        _ => {
            attack(ch, s);
            report(ch, check::TR, selectors().0 as u64);
            0
        }
    };
    report(ch, check::RESUMED, s);
    status
}

/// The one-instruction attacks: each is refused (the guest is stopped) or emulated (it
/// resumes and reports [`check::RESUMED`]).
fn attack(ch: Channel, s: u64) {
    // SAFETY: each instruction is intercepted by the host; the ones it emulates change
    // no guest memory, the others end the run.
    unsafe {
        match s {
            scenario::XSETBV_BAD => {
                enable_cr4(0);
                xsetbv(0x5);
            }
            scenario::LTR => {
                load_gdt();
                ltr_lldt(false);
            }
            scenario::INVD => asm!("invd", options(nostack)),
            scenario::WBINVD => asm!("wbinvd", options(nostack)),
            scenario::RDPMC => {
                asm!("rdpmc", in("ecx") 0, out("eax") _, out("edx") _, options(nostack))
            }
            scenario::MWAIT => asm!("mwait", in("eax") 0, in("ecx") 0, options(nostack)),
            scenario::MONITOR => {
                asm!("monitor", in("rax") PROBE_START, in("ecx") 0, in("edx") 0, options(nostack))
            }
            scenario::INVLPGA => {
                asm!("invlpga rax, ecx", in("rax") 0, in("ecx") 1, options(nostack))
            }
            scenario::DB_LOOP => db_loop(),
            scenario::ICEBP => asm!(".byte 0xf1", options(nostack)),
            // RDPRU is 0F 01 FD (spelled out: not every assembler knows it).
            scenario::RDPRU => {
                asm!(".byte 0x0f, 0x01, 0xfd", in("ecx") 0, out("eax") _, out("edx") _, options(nostack))
            }
            _ => hypercall(ch, op::DONE, 0xbad, 0),
        }
    }
}
