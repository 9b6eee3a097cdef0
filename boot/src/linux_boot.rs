//! The Linux x86 boot protocol, 64-bit entry (Documentation/arch/x86/boot.rst and
//! zero-page.rst): reading a bzImage's setup header, placing the kernel, command line
//! and initramfs in a partition's memory, and building the zero page (`boot_params`)
//! with its e820 map. A bzImage is boot input (a boot module), untrusted: every field is
//! checked, nothing panics, and this module is host-tested and fuzzed (`boot/fuzz`,
//! target `linux_boot`). The kernel's loader (`kernel/src/partition/linux/`) supplies
//! guest memory.

use core::fmt;

/// Where the setup header starts in the image and in the zero page.
const HEADER_START: usize = 0x1F1;
/// The byte after the header's `jump` field: the header's length is `0x202 + image[0x201]`.
const HEADER_JUMP_END: usize = 0x202;
/// The oldest protocol with everything this loader relies on (2.12: `xloadflags`).
pub const MIN_VERSION: u16 = 0x020C;
/// `xloadflags` bit 0: the kernel has the 64-bit entry at load address + 0x200.
const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` bit 0: the protected-mode part runs at 1 MiB or above.
const LOADED_HIGH: u8 = 1 << 0;
/// The 64-bit entry point's offset from the load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// The lowest load address this loader uses: everything below 1 MiB is its boot data.
const MIN_LOAD: u64 = 1 << 20;
/// `boot_params` size.
pub const ZERO_PAGE_SIZE: usize = 4096;
/// The e820 table's capacity in the zero page.
const E820_MAX: usize = 128;

/// Zero-page offsets (zero-page.rst).
mod zp {
    pub const EXT_RAMDISK_IMAGE: usize = 0x0C0;
    pub const EXT_RAMDISK_SIZE: usize = 0x0C4;
    pub const EXT_CMD_LINE_PTR: usize = 0x0C8;
    pub const E820_ENTRIES: usize = 0x1E8;
    pub const VID_MODE: usize = 0x1FA;
    pub const TYPE_OF_LOADER: usize = 0x210;
    pub const LOADFLAGS: usize = 0x211;
    pub const RAMDISK_IMAGE: usize = 0x218;
    pub const RAMDISK_SIZE: usize = 0x21C;
    pub const CMD_LINE_PTR: usize = 0x228;
    pub const E820_TABLE: usize = 0x2D0;
}

/// Why a Linux image cannot be booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinuxError {
    /// Shorter than its setup header, or than the setup code it declares.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes there.
        len: usize,
    },
    /// No 0xAA55 boot flag at 0x1FE.
    NoBootFlag,
    /// No "HdrS" signature at 0x202: not a bzImage (or older than protocol 2.00).
    NoSignature,
    /// A boot protocol older than [`MIN_VERSION`].
    OldProtocol(u16),
    /// `xloadflags` lacks XLF_KERNEL_64: no 64-bit entry.
    No64BitEntry,
    /// `loadflags` lacks LOADED_HIGH (a zImage).
    NotLoadedHigh,
    /// `relocatable_kernel` is 0: the kernel runs only at its own address.
    NotRelocatable,
    /// `kernel_alignment` is not a power of two between 4 KiB and 1 GiB.
    BadAlignment(u32),
    /// The protected-mode part is empty.
    NoPayload,
    /// The setup header claims more bytes than the zero page's header area holds.
    HeaderTooLong(usize),
    /// The kernel's `init_size` from its load address does not fit the partition's memory.
    TooLittleMemory {
        /// Bytes the kernel needs up to the end of its init_size range.
        needed: u64,
        /// The partition's memory.
        memory: u64,
    },
    /// The command line is longer than the kernel's `cmdline_size`.
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The kernel's limit.
        max: u32,
    },
    /// The initramfs does not fit between the kernel's init_size range and the lower of
    /// the end of memory and `initrd_addr_max`.
    InitrdDoesNotFit {
        /// Its length.
        len: u64,
    },
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LinuxError::Truncated { needed, len } => {
                write!(f, "Linux image truncated: {len} bytes, its header needs {needed}")
            }
            LinuxError::NoBootFlag => f.write_str("not a Linux bzImage: no 0xAA55 boot flag at 0x1fe"),
            LinuxError::NoSignature => {
                f.write_str("not a Linux bzImage: no \"HdrS\" setup-header signature at 0x202")
            }
            LinuxError::OldProtocol(v) => write!(
                f,
                "Linux boot protocol {}.{:02} is older than the 2.12 the 64-bit entry needs",
                v >> 8,
                v & 0xFF
            ),
            LinuxError::No64BitEntry => {
                f.write_str("the Linux image has no 64-bit entry (xloadflags lacks XLF_KERNEL_64)")
            }
            LinuxError::NotLoadedHigh => {
                f.write_str("the Linux image is a zImage (loadflags lacks LOADED_HIGH)")
            }
            LinuxError::NotRelocatable => f.write_str("the Linux kernel is not relocatable"),
            LinuxError::BadAlignment(a) => {
                write!(f, "the Linux kernel asks for an alignment of {a:#x} bytes")
            }
            LinuxError::NoPayload => f.write_str("the Linux image has no protected-mode kernel"),
            LinuxError::HeaderTooLong(n) => {
                write!(f, "the Linux setup header claims {n:#x} bytes, past the zero page's header area")
            }
            LinuxError::TooLittleMemory { needed, memory } => write!(
                f,
                "the Linux kernel needs memory up to {} MiB (load address + init_size), the partition has {} MiB",
                needed.div_ceil(1 << 20),
                memory >> 20
            ),
            LinuxError::CmdlineTooLong { len, max } => {
                write!(f, "Linux command line of {len} bytes exceeds the kernel's {max}")
            }
            LinuxError::InitrdDoesNotFit { len } => write!(
                f,
                "the initramfs ({} KiB) does not fit between the kernel and the end of memory",
                len.div_ceil(1024)
            ),
        }
    }
}

fn u8_at(b: &[u8], o: usize) -> u8 {
    b.get(o).copied().unwrap_or(0)
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from(u32_at(b, o)) | u64::from(u32_at(b, o + 4)) << 32
}

/// What a loader needs from a bzImage's setup header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupHeader {
    /// Boot protocol version (0x020F = 2.15).
    pub version: u16,
    /// `xloadflags`.
    pub xloadflags: u16,
    /// `loadflags`.
    pub loadflags: u8,
    /// `kernel_alignment`.
    pub kernel_alignment: u32,
    /// `pref_address`: where the kernel prefers to run.
    pub pref_address: u64,
    /// `init_size`: memory from the load address the kernel needs before it reads e820.
    pub init_size: u32,
    /// `cmdline_size`: the longest command line, without its NUL.
    pub cmdline_size: u32,
    /// `initrd_addr_max`: the highest address the initramfs may end at.
    pub initrd_addr_max: u32,
    /// The file offset of the protected-mode part (`(setup_sects + 1) * 512`).
    pub payload_offset: usize,
    /// The setup header's end (`0x202 + image[0x201]`): bytes 0x1F1..end go to the zero page.
    pub header_end: usize,
}

/// Reads and checks `image`'s setup header: boot flag, "HdrS", protocol >= 2.12,
/// XLF_KERNEL_64, LOADED_HIGH, relocatable, a sane alignment, a payload.
pub fn parse_header(image: &[u8]) -> Result<SetupHeader, LinuxError> {
    let truncated = |needed| LinuxError::Truncated { needed, len: image.len() };
    if image.len() < 0x268 {
        return Err(truncated(0x268));
    }
    if u16_at(image, 0x1FE) != 0xAA55 {
        return Err(LinuxError::NoBootFlag);
    }
    if &image[0x202..0x206] != b"HdrS" {
        return Err(LinuxError::NoSignature);
    }
    let version = u16_at(image, 0x206);
    if version < MIN_VERSION {
        return Err(LinuxError::OldProtocol(version));
    }
    let header_end = HEADER_JUMP_END + usize::from(u8_at(image, 0x201));
    if header_end > zp::E820_TABLE {
        return Err(LinuxError::HeaderTooLong(header_end));
    }
    let setup_sects = match u8_at(image, 0x1F1) {
        0 => 4,
        n => usize::from(n),
    };
    let payload_offset = (setup_sects + 1) * 512;
    if image.len() < header_end.max(payload_offset) {
        return Err(truncated(header_end.max(payload_offset)));
    }
    if image.len() == payload_offset {
        return Err(LinuxError::NoPayload);
    }
    let h = SetupHeader {
        version,
        xloadflags: u16_at(image, 0x236),
        loadflags: u8_at(image, 0x211),
        kernel_alignment: u32_at(image, 0x230),
        pref_address: u64_at(image, 0x258),
        init_size: u32_at(image, 0x260),
        cmdline_size: u32_at(image, 0x238),
        initrd_addr_max: u32_at(image, 0x22C),
        payload_offset,
        header_end,
    };
    if h.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LinuxError::No64BitEntry);
    }
    if h.loadflags & LOADED_HIGH == 0 {
        return Err(LinuxError::NotLoadedHigh);
    }
    if u8_at(image, 0x234) == 0 {
        return Err(LinuxError::NotRelocatable);
    }
    let a = h.kernel_alignment;
    if !a.is_power_of_two() || !(0x1000..=1 << 30).contains(&a) {
        return Err(LinuxError::BadAlignment(a));
    }
    Ok(h)
}

/// Where everything goes in guest-physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The protected-mode kernel's load address (aligned to `kernel_alignment`).
    pub kernel: u64,
    /// The 64-bit entry point (`kernel + 0x200`).
    pub entry: u64,
    /// The initramfs (page-aligned, at the top of what it may use; 0 when there is none).
    pub initrd: u64,
}

/// Places the kernel (its preferred address, at least 1 MiB, rounded up to its
/// alignment; its `init_size` range must fit `memory`) and an initramfs of `initrd_len`
/// bytes (page-aligned, as high as memory and `initrd_addr_max` allow, above the
/// kernel's init_size range), and checks the command line's length against the kernel's.
pub fn plan(
    h: &SetupHeader,
    image_len: usize,
    memory: u64,
    initrd_len: u64,
    cmdline_len: usize,
) -> Result<Layout, LinuxError> {
    if cmdline_len > h.cmdline_size as usize {
        return Err(LinuxError::CmdlineTooLong { len: cmdline_len, max: h.cmdline_size });
    }
    let align = u64::from(h.kernel_alignment);
    let kernel = h.pref_address.max(MIN_LOAD).checked_next_multiple_of(align).unwrap_or(u64::MAX);
    let payload = image_len.saturating_sub(h.payload_offset) as u64;
    let needed = kernel.saturating_add(u64::from(h.init_size).max(payload));
    if needed > memory {
        return Err(LinuxError::TooLittleMemory { needed, memory });
    }
    let initrd = if initrd_len == 0 {
        0
    } else {
        let top = memory.min(u64::from(h.initrd_addr_max) + 1);
        let start = top.checked_sub(initrd_len).map(|s| s & !0xFFF);
        match start {
            Some(s) if s >= needed => s,
            _ => return Err(LinuxError::InitrdDoesNotFit { len: initrd_len }),
        }
    };
    Ok(Layout { kernel, entry: kernel + ENTRY_64_OFFSET, initrd })
}

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820 {
    /// Start.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// 1 = RAM, 2 = reserved.
    pub kind: u32,
}

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// The e820 map of a partition with `memory` bytes from guest-physical 0: RAM below
/// 640 KiB (Linux's real-mode trampoline lives there), the legacy hole reserved, RAM from
/// 1 MiB to the end. Guest RAM ends below the interrupt window (at most 3 GiB, checked
/// where partitions are configured), so no RAM range has to go around it; device BARs
/// (from 3 GiB) need no entry with `acpi=off`.
pub fn e820_map(memory: u64) -> [E820; 3] {
    [
        E820 { addr: 0, size: 0xA_0000, kind: E820_RAM },
        E820 { addr: 0xA_0000, size: 0x6_0000, kind: E820_RESERVED },
        E820 { addr: 0x10_0000, size: memory.saturating_sub(0x10_0000), kind: E820_RAM },
    ]
}

/// The boot data the zero page points at.
#[derive(Debug, Clone, Copy)]
pub struct BootData<'a> {
    /// The command line's guest-physical address (NUL-terminated there).
    pub cmdline_addr: u64,
    /// The initramfs's address and length (0, 0 for none).
    pub initrd: (u64, u64),
    /// The memory map.
    pub e820: &'a [E820],
}

fn put(zp: &mut [u8; ZERO_PAGE_SIZE], at: usize, bytes: &[u8]) {
    zp[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The zero page: zeroed; the image's setup header copied to its offsets (the
/// `sentinel` at 0x1EF stays 0); `type_of_loader` 0xFF (undefined loader), `vid_mode`
/// 0xFFFF, LOADED_HIGH kept and nothing else set in `loadflags` (never KASLR_FLAG, the
/// kernel's own); the command line and initramfs pointers (low 32 bits, high 32 bits in
/// the ext_ fields); the e820 map (at most 128 entries).
pub fn zero_page(image: &[u8], h: &SetupHeader, data: &BootData<'_>) -> [u8; ZERO_PAGE_SIZE] {
    let mut z = [0u8; ZERO_PAGE_SIZE];
    let end = h.header_end.min(image.len());
    put(&mut z, HEADER_START, image.get(HEADER_START..end).unwrap_or(&[]));
    z[zp::TYPE_OF_LOADER] = 0xFF;
    z[zp::LOADFLAGS] = LOADED_HIGH;
    put(&mut z, zp::VID_MODE, &0xFFFFu16.to_le_bytes());
    let split = |v: u64| ((v as u32).to_le_bytes(), ((v >> 32) as u32).to_le_bytes());
    let (lo, hi) = split(data.cmdline_addr);
    put(&mut z, zp::CMD_LINE_PTR, &lo);
    put(&mut z, zp::EXT_CMD_LINE_PTR, &hi);
    let (lo, hi) = split(data.initrd.0);
    put(&mut z, zp::RAMDISK_IMAGE, &lo);
    put(&mut z, zp::EXT_RAMDISK_IMAGE, &hi);
    let (lo, hi) = split(data.initrd.1);
    put(&mut z, zp::RAMDISK_SIZE, &lo);
    put(&mut z, zp::EXT_RAMDISK_SIZE, &hi);
    let n = data.e820.len().min(E820_MAX);
    z[zp::E820_ENTRIES] = n as u8;
    for (i, e) in data.e820[..n].iter().enumerate() {
        let at = zp::E820_TABLE + i * 20;
        put(&mut z, at, &e.addr.to_le_bytes());
        put(&mut z, at + 8, &e.size.to_le_bytes());
        put(&mut z, at + 16, &e.kind.to_le_bytes());
    }
    z
}

#[cfg(test)]
mod tests;
