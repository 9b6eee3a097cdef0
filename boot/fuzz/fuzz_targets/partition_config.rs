//! Fuzzes the partition configuration parser: any text parses or is refused with a line
//! number, and every accepted configuration obeys the limits the parser promises.
#![no_main]

use boot::partition_config::{parse, MAX_DEVICES, MAX_MEMORY, MAX_PARTITIONS, MIN_MEMORY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(cfg) => {
            assert!(!cfg.is_empty() && cfg.len() <= MAX_PARTITIONS);
            for p in cfg.partitions() {
                assert!(p.memory >= MIN_MEMORY && p.memory <= MAX_MEMORY, "{p:?}");
                assert_eq!(p.memory % p.backing.page_size(), 0);
                assert!(p.devices().len() <= MAX_DEVICES && p.cpus == 1);
                let _ = format!("{}", p.backing);
            }
        }
        Err(e) => {
            // Line 0 only for an empty text (nothing to point at).
            let empty = text.lines().count() == 0;
            assert!(e.line <= text.lines().count() && (e.line >= 1 || empty), "{e:?}");
            let _ = e.to_string();
        }
    }
});
