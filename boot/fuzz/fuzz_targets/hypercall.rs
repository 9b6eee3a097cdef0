//! Fuzzes hypercall decoding and the display of guest log text: any registers decode,
//! a log never asks for more than `MAX_LOG` bytes, and shown text holds no control
//! character and no unescaped quote, whatever bytes the guest passed.
#![no_main]

use guest::hypercall::{decode, Escaped, Hypercall, MAX_LOG};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        for (k, b) in w.iter_mut().enumerate() {
            *b = data.get(i * 8 + k).copied().unwrap_or(0);
        }
        u64::from_le_bytes(w)
    };
    let rax = word(0) % 8 | word(0) & !0xFFFF_FFFF;
    if let Hypercall::Log { len, .. } = decode(rax, word(1), word(2)) {
        assert!(len <= MAX_LOG);
    }
    let text = data.get(24..).unwrap_or(&[]);
    let shown = Escaped(text).to_string();
    assert!(!shown.chars().any(char::is_control), "control character shown: {shown:?}");
    let mut escaped = false;
    for c in shown.chars() {
        assert!(escaped || c != '"', "unescaped quote in {shown:?}");
        escaped = !escaped && c == '\\';
    }
});
