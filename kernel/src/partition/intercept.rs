//! The intercept policy, vendor-neutral: what a partition is told by CPUID, which XCR0
//! values it may set, and which instructions it may not execute at all. The SVM backend
//! sets the intercept bits (`svm.rs`, one reason each) and calls these.
//!
//! | instruction | policy | why |
//! | --- | --- | --- |
//! | CPUID | emulated, filtered ([`guest_cpuid`]) | the guest must not be told of SVM, a PMU, MONITOR/MWAIT, RDPRU or XSAVE components it cannot use |
//! | XSETBV | emulated when [`xcr0_allowed`] accepts the value, else the partition stops | XCR0 is host state VMRUN does not switch; only switched components may be enabled |
//! | WBINVD, INVD | emulated as a host WBINVD | a guest with a device may need its caches written back; INVD would throw away the host's dirty lines, so it is never executed |
//! | MONITOR, MWAIT (both forms) | the partition stops | CPUID says there is none; MWAIT would idle the host's CPU on guest terms |
//! | RDPMC, RDPRU | the partition stops | the performance counters and RDPRU registers are the host's; CPUID says there are none |
//! | INVLPGA | the partition stops | an SVM instruction (CPUID says there is no SVM); it names other ASIDs' TLB entries |
//! | task switch | the partition stops | long mode has none; only a hostile guest would reach one |
//! | ICEBP (INT1), #DB, #AC | the partition stops, whatever the exception intercepts asked | the benign-exception loops of CVE-2015-8104 (#DB) and CVE-2015-5307 (#AC) hang a host that lets the guest take them |
//! | #MC | handed to the host's machine-check handler, the partition stops | a machine check is the host's event, never a guest exception |
//! | RDTSC, RDTSCP | not intercepted, TSC offset 0 | one CPU, never migrated: the guest reads the host's TSC, which tells it elapsed time and nothing it could not measure by counting |
//! | LTR, LLDT, LGDT, LIDT, SGDT, ... | not intercepted | after the world switch (`world.rs`) these reach only the guest's own state |
//! | every MSR, every I/O port but the hypercall port | the partition stops | see `docs/partitions.md` |
#![deny(unsafe_code)]

use core::arch::x86_64::__cpuid_count;

/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;
/// CR4.PKE.
const CR4_PKE: u64 = 1 << 22;

/// Whether a guest may set XCR0 to `value`, given the components the host switches
/// (`mask`): the architectural rules (x87 always on, AVX needs SSE, AVX-512's three
/// components together and with AVX, MPX's two together) and nothing outside `mask`.
pub fn xcr0_allowed(value: u64, mask: u64) -> Result<(), &'static str> {
    if value & !mask != 0 {
        return Err("a component the host does not switch");
    }
    if value & 1 == 0 {
        return Err("x87 off");
    }
    if value & 0b100 != 0 && value & 0b10 == 0 {
        return Err("AVX without SSE");
    }
    let avx512 = value & 0xE0;
    if avx512 != 0 && (avx512 != 0xE0 || value & 0b100 == 0) {
        return Err("AVX-512 components not all on together with AVX");
    }
    let mpx = value & 0x18;
    if mpx != 0 && mpx != 0x18 {
        return Err("only one of the MPX components");
    }
    Ok(())
}

fn host_cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = __cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The hypervisor's CPUID signature at leaf 0x4000_0000 (EBX, ECX, EDX).
pub const SIGNATURE: &[u8; 12] = b"uhv-iommu-hv";

/// What the guest's CPUID(`leaf`, `sub`) returns (EAX, EBX, ECX, EDX): the host's values
/// with SVM, VMX/SMX, MONITOR/MWAIT, the PMU, RDPRU, x2APIC, TSC deadline, LA57, XSAVES and
/// every XSAVE component outside `xcr0_mask` removed, the hypervisor bit set, and the
/// OSXSAVE/OSPKE bits following the guest's own CR4 (`guest_cr4`). `area_size` is the
/// XSAVE area for `xcr0_mask`, reported as the size for any guest XCR0 (an upper bound).
pub fn guest_cpuid(
    leaf: u32,
    sub: u32,
    guest_cr4: u64,
    xcr0_mask: u64,
    area_size: u32,
) -> [u32; 4] {
    let max_basic = host_cpuid(0, 0)[0];
    let max_ext = host_cpuid(0x8000_0000, 0)[0];
    if leaf == 0x4000_0000 {
        let w = |i: usize| {
            u32::from_le_bytes([SIGNATURE[i], SIGNATURE[i + 1], SIGNATURE[i + 2], SIGNATURE[i + 3]])
        };
        return [0x4000_0000, w(0), w(4), w(8)];
    }
    let in_range = leaf <= max_basic || (0x8000_0000..=max_ext).contains(&leaf);
    if !in_range {
        return [0; 4];
    }
    let mut r = host_cpuid(leaf, sub);
    match leaf {
        1 => {
            // MONITOR (3), VMX (5), SMX (6), PDCM (15), x2APIC (21), TSC deadline (24),
            // OSXSAVE (27, set below from the guest's CR4); HYPERVISOR (31) on.
            r[2] &= !(1 << 3 | 1 << 5 | 1 << 6 | 1 << 15 | 1 << 21 | 1 << 24 | 1 << 27);
            r[2] |= 1 << 31;
            if guest_cr4 & CR4_OSXSAVE != 0 {
                r[2] |= 1 << 27;
            }
        }
        // MONITOR/MWAIT leaf, thermal and power, architectural PMU: none.
        5 | 6 | 0xA => r = [0; 4],
        7 if sub == 0 => {
            // OSPKE (ECX bit 4) follows the guest's CR4.PKE, and only with PKU (bit 3).
            // LA57 (ECX bit 16): partitions get 4-level paging (a Linux guest would
            // otherwise switch to 5-level paging, which no partition was tested with).
            r[2] &= !(1 << 4 | 1 << 16);
            if guest_cr4 & CR4_PKE != 0 && r[2] & (1 << 3) != 0 {
                r[2] |= 1 << 4;
            }
        }
        0xD => match sub {
            0 => r = [xcr0_mask as u32, area_size, area_size, (xcr0_mask >> 32) as u32],
            // XSAVES/XRSTORS (bit 3) need IA32_XSS, which the guest cannot write.
            1 => r = [r[0] & !(1 << 3), 0, 0, 0],
            s if s < 64 && xcr0_mask & (1u64 << s) != 0 => {}
            _ => r = [0; 4],
        },
        0x8000_0001 => {
            // SVM (2), IBS (10), SKINIT (12), WDT (13), core/NB/LLC performance counters
            // (23, 24, 28), MONITORX (29).
            r[2] &= !(1 << 2 | 1 << 10 | 1 << 12 | 1 << 13 | 1 << 23 | 1 << 24 | 1 << 28 | 1 << 29);
        }
        // RDPRU (EBX bit 4).
        0x8000_0008 => r[1] &= !(1 << 4),
        // The SVM leaf, SEV, extended performance monitoring: none.
        0x8000_000A | 0x8000_001F | 0x8000_0022 => r = [0; 4],
        _ => {}
    }
    r
}
