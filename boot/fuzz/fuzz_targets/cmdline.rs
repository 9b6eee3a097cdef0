//! Fuzzes the kernel command-line parser.
#![no_main]

use boot::cmdline::Options;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    match Options::parse(text) {
        Ok(o) => {
            let _ = o.selects("partition_guest_4k");
            let _ = format!("{o:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
