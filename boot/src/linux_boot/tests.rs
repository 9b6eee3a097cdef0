use super::*;

/// A bzImage with Debian 12's 6.1 header values (protocol 2.15, 39 setup sectors,
/// init_size 0x3f98000, 16 MiB preferred, 2 MiB alignment) and `payload` bytes of kernel.
fn image(payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; 40 * 512 + payload];
    b[0x1F1] = 39;
    b[0x1FE..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
    b[0x201] = 0x6A; // header ends at 0x26C
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
    b[0x211] = 0x01;
    b[0x22C..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
    b[0x234] = 1;
    b[0x236..0x238].copy_from_slice(&0x7Fu16.to_le_bytes());
    b[0x238..0x23C].copy_from_slice(&0x7FFu32.to_le_bytes());
    b[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes());
    b[0x260..0x264].copy_from_slice(&0x3f9_8000u32.to_le_bytes());
    b
}

#[test]
fn reads_debians_header() {
    let h = parse_header(&image(4096)).unwrap();
    assert_eq!(h.version, 0x020F);
    assert_eq!(h.payload_offset, 0x5000);
    assert_eq!(h.header_end, 0x26C);
    assert_eq!((h.pref_address, h.init_size, h.cmdline_size), (0x100_0000, 0x3f9_8000, 0x7FF));
}

#[test]
fn refuses_what_is_not_a_64_bit_bzimage() {
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = image(4096);
        f(&mut b);
        parse_header(&b)
    };
    assert_eq!(parse_header(&[0; 100]), Err(LinuxError::Truncated { needed: 0x268, len: 100 }));
    assert_eq!(with(&|b| b[0x1FE] = 0), Err(LinuxError::NoBootFlag));
    assert_eq!(with(&|b| b[0x202] = b'X'), Err(LinuxError::NoSignature));
    assert_eq!(with(&|b| b[0x206] = 0x0B), Err(LinuxError::OldProtocol(0x020B)));
    assert_eq!(with(&|b| b[0x236] = 0x7E), Err(LinuxError::No64BitEntry));
    assert_eq!(with(&|b| b[0x211] = 0), Err(LinuxError::NotLoadedHigh));
    assert_eq!(with(&|b| b[0x234] = 0), Err(LinuxError::NotRelocatable));
    assert_eq!(with(&|b| b[0x232] = 0x30), Err(LinuxError::BadAlignment(0x30_0000)));
    assert_eq!(with(&|b| b[0x201] = 0xFF), Err(LinuxError::HeaderTooLong(0x301)));
    assert_eq!(with(&|b| b.truncate(0x5000)), Err(LinuxError::NoPayload));
    assert_eq!(
        with(&|b| b.truncate(0x4000)),
        Err(LinuxError::Truncated { needed: 0x5000, len: 0x4000 })
    );
    // setup_sects = 0 means 4.
    let mut b = image(0);
    b[0x1F1] = 0;
    assert_eq!(parse_header(&b).unwrap().payload_offset, 5 * 512);
    let e = with(&|b| b[0x202] = b'X').unwrap_err();
    assert!(e.to_string().contains("\"HdrS\""), "{e}");
}

#[test]
fn places_kernel_and_initrd() {
    let img = image(8 << 20);
    let h = parse_header(&img).unwrap();
    let l = plan(&h, img.len(), 128 << 20, 2_586_664, 100).unwrap();
    assert_eq!(l.kernel, 0x100_0000);
    assert_eq!(l.entry, 0x100_0200);
    assert_eq!(l.initrd % 4096, 0);
    assert!(l.initrd + 2_586_664 <= 128 << 20);
    assert!(l.initrd >= 0x100_0000 + 0x3f9_8000);
    // No initramfs.
    assert_eq!(plan(&h, img.len(), 128 << 20, 0, 0).unwrap().initrd, 0);
    // 64 MiB cannot hold 16 MiB + init_size.
    assert_eq!(
        plan(&h, img.len(), 64 << 20, 0, 0),
        Err(LinuxError::TooLittleMemory { needed: 0x100_0000 + 0x3f9_8000, memory: 64 << 20 })
    );
    // 80 MiB holds the kernel but not a 2.5 MB initramfs above it.
    assert_eq!(
        plan(&h, img.len(), 80 << 20, 2_586_664, 0),
        Err(LinuxError::InitrdDoesNotFit { len: 2_586_664 })
    );
    assert_eq!(
        plan(&h, img.len(), 128 << 20, 0, 0x800),
        Err(LinuxError::CmdlineTooLong { len: 0x800, max: 0x7FF })
    );
    // An initramfs larger than memory does not wrap.
    assert!(plan(&h, img.len(), 128 << 20, u64::MAX, 0).is_err());
    // initrd_addr_max below memory's end caps the initramfs.
    let mut low = img.clone();
    low[0x22C..0x230].copy_from_slice(&0x05ff_ffffu32.to_le_bytes());
    let h2 = parse_header(&low).unwrap();
    let l2 = plan(&h2, low.len(), 128 << 20, 4096, 0).unwrap();
    assert_eq!(l2.initrd, 0x600_0000 - 4096);
}

#[test]
fn builds_the_zero_page() {
    let img = image(4096);
    let h = parse_header(&img).unwrap();
    let e820 = e820_map(128 << 20);
    let z = zero_page(
        &img,
        &h,
        &BootData { cmdline_addr: 0x9000, initrd: (0x7d6_0000, 1234), e820: &e820 },
    );
    assert_eq!(&z[0x202..0x206], b"HdrS");
    assert_eq!(z[0x1EF], 0, "sentinel");
    assert_eq!(z[0x1F1], 39);
    assert_eq!(z[0x210], 0xFF);
    assert_eq!(z[0x211], 0x01);
    assert_eq!(u16_at(&z, 0x1FA), 0xFFFF);
    assert_eq!(u32_at(&z, 0x228), 0x9000);
    assert_eq!(u32_at(&z, 0x218), 0x7d6_0000);
    assert_eq!(u32_at(&z, 0x21C), 1234);
    assert_eq!(z[0x1E8], 3);
    assert_eq!(u64_at(&z, 0x2D0 + 40), 0x10_0000);
    assert_eq!(u64_at(&z, 0x2D0 + 48), (128 << 20) - 0x10_0000);
    assert_eq!(u32_at(&z, 0x2D0 + 56), E820_RAM);
    assert_eq!(u32_at(&z, 0x2D0 + 36), E820_RESERVED);
    // Nothing past the header was copied.
    assert!(z[0x26C..0x2D0].iter().all(|b| *b == 0));
}
