//! Fuzzes the Linux boot-protocol loader: a bzImage header it accepts yields a layout
//! inside the partition's memory (kernel from 1 MiB, its init_size range and the
//! initramfs inside memory and apart), and the zero page keeps the loader's fields.
#![no_main]

use boot::linux_boot::{e820_map, parse_header, plan, zero_page, BootData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 12 bytes choose the partition's memory, initramfs and command-line sizes.
    let Some((sizes, image)) = data.split_first_chunk::<12>() else { return };
    let memory = u64::from(u32::from_le_bytes([sizes[0], sizes[1], sizes[2], sizes[3]])) << 8;
    let initrd = u64::from(u32::from_le_bytes([sizes[4], sizes[5], sizes[6], sizes[7]]));
    let cmdline = u16::from_le_bytes([sizes[8], sizes[9]]) as usize;
    let h = match parse_header(image) {
        Ok(h) => h,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(h.payload_offset < image.len() && h.header_end <= 0x2D0);
    match plan(&h, image.len(), memory, initrd, cmdline) {
        Ok(l) => {
            assert!(l.kernel >= 1 << 20 && l.kernel % u64::from(h.kernel_alignment) == 0);
            let end = l.kernel + u64::from(h.init_size).max((image.len() - h.payload_offset) as u64);
            assert!(end <= memory, "kernel past memory");
            assert!(cmdline <= h.cmdline_size as usize);
            if initrd != 0 {
                assert!(l.initrd % 4096 == 0 && l.initrd >= end && l.initrd + initrd <= memory);
            }
            let e820 = e820_map(memory);
            let z = zero_page(image, &h, &BootData { cmdline_addr: 0x9000, initrd: (l.initrd, initrd), e820: &e820 });
            assert_eq!(z[0x1EF], 0);
            assert_eq!(z[0x210], 0xFF);
            assert_eq!(z[0x1E8], 3);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
