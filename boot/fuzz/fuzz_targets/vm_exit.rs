//! Fuzzes the SVM exit decoding and the intercept policy with arbitrary register values:
//! the decoder (the kernel's own `svm_exit.rs`, compiled here unchanged) accepts every
//! exit code and EXITINFO, the XCR0 check never lets through a value outside the host's
//! mask or without x87, and the CPUID view never shows SVM or MONITOR.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../../kernel/src/partition/vcpu.rs"]
mod vcpu;

#[allow(dead_code)]
#[path = "../../../kernel/src/partition/svm_exit.rs"]
mod svm_exit;

#[allow(dead_code)]
#[path = "../../../kernel/src/partition/intercept.rs"]
mod intercept;

fn word(data: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    for (k, b) in w.iter_mut().enumerate() {
        *b = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(w)
}

fuzz_target!(|data: &[u8]| {
    let (code, info1, info2, rip) = (word(data, 0), word(data, 1), word(data, 2), word(data, 3));
    // Exit codes are small numbers, so bias half the inputs into their range.
    let code = if code & 1 == 0 { (code >> 1) % 0x500 } else { code };
    let next = svm_exit::next_rip(code, rip, info2, (info1 & 1 != 0).then_some(word(data, 6)));
    match svm_exit::decode(code, info1, info2, rip, next) {
        svm_exit::Decoded::Exit(vcpu::VmExit::Exception { vector, .. }) => assert!(vector < 32),
        svm_exit::Decoded::Exit(vcpu::VmExit::Io { size, .. }) => assert!(size < 8),
        _ => {}
    }
    let (value, mask) = (word(data, 4), word(data, 5) | 1);
    if intercept::xcr0_allowed(value, mask).is_ok() {
        assert!(value & !mask == 0 && value & 1 == 1, "{value:#x} allowed under {mask:#x}");
    }
    let leaf = [1, 7, 0xD, 0x8000_0001, 0x8000_000A, 0x4000_0000, info1 as u32][(rip % 7) as usize];
    let r = intercept::guest_cpuid(leaf, info2 as u32, word(data, 6), mask, 4096);
    match leaf {
        1 => assert!(r[2] & 1 << 3 == 0 && r[2] & 1 << 31 != 0, "leaf 1 ECX {:#x}", r[2]),
        0x8000_0001 => assert!(r[2] & 1 << 2 == 0, "SVM shown"),
        0x8000_000A => assert_eq!(r, [0; 4]),
        _ => {}
    }
});
