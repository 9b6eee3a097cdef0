//! The partition configuration: a small line-oriented text format naming each guest
//! partition's memory, backing page size, CPU count, guest image and PCI devices.
//!
//! ```text
//! # comment
//! partition alpha        # starts a partition; the name is [a-z0-9_-], 1-16 characters
//!   memory 64M           # required: bytes, or with K/M/G (KiB/MiB/GiB); >= 2 MiB
//!   backing 2m           # 4k (default) or 2m host pages behind guest memory
//!   cpus 1               # only 1 is supported for now
//!   image builtin        # `builtin` (default), `module:NAME` (a boot module's file name)
//!                        # or `linux:NAME` (a Linux bzImage boot module)
//!   initrd NAME          # Linux only: the initramfs boot module
//!   cmdline "TEXT"       # Linux only: its command line, in double quotes (printable
//!                        # ASCII, no quote inside, at most 2047 bytes)
//!   device 00:04.0       # a PCI function, [SSSS:]BB:DD.F in hex; repeatable
//!   unreset-devices refuse  # `refuse` (default) or `allow`: take devices that could
//!                        # not be reset after another partition owned them
//!   platform pc          # `none` (default) or `pc`: the emulated PIC, PIT and local
//!                        # APIC an operating system needs
//! ```
//!
//! Parsing is syntax and self-consistency only (no allocation: fixed-size arrays that
//! borrow the text); the kernel checks the result against the machine (devices exist and
//! sit behind an IOMMU, memory is available) before anything starts.

use core::fmt;

mod error;
pub use error::{ConfigError, ConfigErrorKind};

/// Partitions one configuration may hold.
pub const MAX_PARTITIONS: usize = 4;
/// PCI devices one partition may own.
pub const MAX_DEVICES: usize = 4;
/// The smallest partition: the guest's page tables, boot page, stack and image fill the
/// first MiB and a half, so less than 2 MiB cannot run a guest.
pub const MIN_MEMORY: u64 = 2 << 20;
/// The largest partition this format accepts (its guest identity map covers 4 GiB).
pub const MAX_MEMORY: u64 = 3 << 30;
/// Longest partition name.
pub const MAX_NAME: usize = 16;
/// Longest Linux command line (the x86 boot protocol's COMMAND_LINE_SIZE less its NUL).
pub const MAX_CMDLINE: usize = 2047;

/// Host page size behind guest memory (and the nested page-table leaf size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// 4 KiB frames, each mapped by its own nested PTE.
    Pages4K,
    /// 2 MiB-aligned runs, mapped by nested 2 MiB entries.
    Pages2M,
}

impl Backing {
    /// Page size in bytes.
    pub fn page_size(self) -> u64 {
        match self {
            Backing::Pages4K => 4 << 10,
            Backing::Pages2M => 2 << 20,
        }
    }
}

impl fmt::Display for Backing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backing::Pages4K => "4k",
            Backing::Pages2M => "2m",
        })
    }
}

/// Which program a partition runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestImage<'a> {
    /// The guest program built into the hypervisor.
    Builtin,
    /// A boot module, by the file name of its first word (path stripped).
    Module(&'a str),
    /// A Linux kernel (bzImage) boot module, by file name, started through the 64-bit
    /// boot protocol.
    Linux(&'a str),
}

/// The emulated platform devices a partition gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestPlatformKind {
    /// None: every port and MMIO access outside RAM and assigned BARs stops the guest.
    #[default]
    None,
    /// A PC's interrupt controllers and timers: 8259 pair, 8254, local APIC (xAPIC).
    Pc,
}

/// A PCI function address as written in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct DeviceAddr {
    /// PCI segment group.
    pub segment: u16,
    /// Bus.
    pub bus: u8,
    /// Device (0-31).
    pub device: u8,
    /// Function (0-7).
    pub function: u8,
}

impl fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{}", self.segment, self.bus, self.device, self.function)
    }
}

/// One partition as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSpec<'a> {
    /// Its name, for logs and for the IOMMU domain.
    pub name: &'a str,
    /// Guest memory in bytes (a multiple of the backing page size).
    pub memory: u64,
    /// Host page size behind it.
    pub backing: Backing,
    /// Virtual CPUs (always 1 today).
    pub cpus: u32,
    /// The program it runs.
    pub image: GuestImage<'a>,
    /// A Linux guest's initramfs boot module (`initrd NAME`).
    pub initrd: Option<&'a str>,
    /// A Linux guest's command line (`cmdline "TEXT"`, without the quotes).
    pub cmdline: Option<&'a str>,
    devices: [DeviceAddr; MAX_DEVICES],
    device_count: usize,
    /// The line of its `partition` keyword, for messages.
    pub line: usize,
    /// `unreset-devices allow`: it may be given a device that another partition owned
    /// and that offers no reset (the device may still hold that partition's data).
    pub accept_unreset: bool,
    /// `platform pc`: the guest gets emulated interrupt controllers and timers.
    pub platform: GuestPlatformKind,
}

impl<'a> PartitionSpec<'a> {
    /// A partition with the defaults (4K backing, one CPU, the built-in guest), no
    /// devices and `memory` bytes; for code that builds partitions without a file.
    pub fn new(name: &'a str, memory: u64, backing: Backing) -> PartitionSpec<'a> {
        PartitionSpec {
            name,
            memory,
            backing,
            cpus: 1,
            image: GuestImage::Builtin,
            initrd: None,
            cmdline: None,
            devices: [DeviceAddr::default(); MAX_DEVICES],
            device_count: 0,
            line: 0,
            accept_unreset: false,
            platform: GuestPlatformKind::None,
        }
    }

    /// The PCI functions it owns.
    pub fn devices(&self) -> &[DeviceAddr] {
        &self.devices[..self.device_count]
    }
}

/// A parsed, self-consistent configuration.
#[derive(Debug, Clone)]
pub struct PartitionConfig<'a> {
    partitions: [Option<PartitionSpec<'a>>; MAX_PARTITIONS],
    count: usize,
}

impl<'a> PartitionConfig<'a> {
    /// The partitions, in file order.
    pub fn partitions(&self) -> impl Iterator<Item = &PartitionSpec<'a>> {
        self.partitions[..self.count].iter().flatten()
    }

    /// How many partitions.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none (never true for a parsed configuration).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Which settings a partition has seen (to refuse repeats).
#[derive(Default)]
struct Seen {
    memory: bool,
    backing: bool,
    cpus: bool,
    image: bool,
    unreset: bool,
    platform: bool,
    initrd: bool,
    cmdline: bool,
}

/// Parses and checks `text`; the result borrows names from it.
pub fn parse(text: &str) -> Result<PartitionConfig<'_>, ConfigError<'_>> {
    let mut cfg = PartitionConfig { partitions: [None; MAX_PARTITIONS], count: 0 };
    let mut seen = Seen::default();
    let mut last_line = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        last_line = line;
        let err = |kind| ConfigError { line, kind };
        // `cmdline "TEXT"`: the one value with spaces (and perhaps `#`) in it.
        if let Some(value) = cmdline_value(raw) {
            let value = value.map_err(err)?;
            let current = cfg
                .count
                .checked_sub(1)
                .ok_or(err(ConfigErrorKind::OutsidePartition("cmdline")))?;
            let spec = cfg.partitions[current].as_mut().ok_or(err(ConfigErrorKind::Empty))?;
            if core::mem::replace(&mut seen.cmdline, true) {
                return Err(err(ConfigErrorKind::Repeated("cmdline")));
            }
            spec.cmdline = Some(value);
            continue;
        }
        let content = raw.split('#').next().unwrap_or("");
        let mut words = content.split_whitespace();
        let Some(key) = words.next() else { continue };
        let value = words.next();
        let key_name = known_key(key).ok_or(err(ConfigErrorKind::UnknownKey(key)))?;
        let value = value.ok_or(err(ConfigErrorKind::MissingValue(key_name)))?;
        if words.next().is_some() {
            return Err(err(ConfigErrorKind::ExtraWords(key_name)));
        }
        if key_name == "partition" {
            finish(&cfg, cfg.count.checked_sub(1))?;
            if cfg.count == MAX_PARTITIONS {
                return Err(err(ConfigErrorKind::TooManyPartitions));
            }
            if !valid_name(value) {
                return Err(err(ConfigErrorKind::BadName(value)));
            }
            if cfg.partitions().any(|p| p.name == value) {
                return Err(err(ConfigErrorKind::DuplicateName(value)));
            }
            let mut spec = PartitionSpec::new(value, 0, Backing::Pages4K);
            spec.line = line;
            cfg.partitions[cfg.count] = Some(spec);
            cfg.count += 1;
            seen = Seen::default();
            continue;
        }
        let current =
            cfg.count.checked_sub(1).ok_or(err(ConfigErrorKind::OutsidePartition(key)))?;
        // Devices are checked against every partition before the current one is borrowed.
        if key_name == "device" {
            let dev = parse_device(value).ok_or(err(ConfigErrorKind::BadDevice(value)))?;
            let me = cfg.partitions[current].map(|p| p.name).unwrap_or("");
            if let Some(owner) = cfg.partitions().find(|p| p.devices().contains(&dev)) {
                return Err(err(ConfigErrorKind::DeviceTwice {
                    device: dev,
                    first: owner.name,
                    second: me,
                }));
            }
        }
        let spec = cfg.partitions[current].as_mut().ok_or(err(ConfigErrorKind::Empty))?;
        let once = |flag: &mut bool| {
            if core::mem::replace(flag, true) {
                Err(err(ConfigErrorKind::Repeated(key_name)))
            } else {
                Ok(())
            }
        };
        match key_name {
            "memory" => {
                once(&mut seen.memory)?;
                spec.memory = parse_size(value).ok_or(err(ConfigErrorKind::BadSize(value)))?;
            }
            "backing" => {
                once(&mut seen.backing)?;
                spec.backing = match value {
                    "4k" | "4K" => Backing::Pages4K,
                    "2m" | "2M" => Backing::Pages2M,
                    _ => return Err(err(ConfigErrorKind::BadBacking(value))),
                };
            }
            "cpus" => {
                once(&mut seen.cpus)?;
                let n: u32 = value.parse().map_err(|_| err(ConfigErrorKind::BadCpus(value)))?;
                match n {
                    0 => return Err(err(ConfigErrorKind::BadCpus(value))),
                    1 => spec.cpus = 1,
                    _ => return Err(err(ConfigErrorKind::TooManyCpus(n))),
                }
            }
            "image" => {
                once(&mut seen.image)?;
                spec.image = match (value.strip_prefix("module:"), value.strip_prefix("linux:")) {
                    _ if value == "builtin" => GuestImage::Builtin,
                    (Some(m), _) if !m.is_empty() => GuestImage::Module(m),
                    (_, Some(m)) if !m.is_empty() => GuestImage::Linux(m),
                    _ => return Err(err(ConfigErrorKind::BadImage(value))),
                };
            }
            "initrd" => {
                once(&mut seen.initrd)?;
                spec.initrd = Some(value);
            }
            "unreset-devices" => {
                once(&mut seen.unreset)?;
                spec.accept_unreset = match value {
                    "refuse" => false,
                    "allow" => true,
                    _ => return Err(err(ConfigErrorKind::BadUnreset(value))),
                };
            }
            "platform" => {
                once(&mut seen.platform)?;
                spec.platform = match value {
                    "none" => GuestPlatformKind::None,
                    "pc" => GuestPlatformKind::Pc,
                    _ => return Err(err(ConfigErrorKind::BadPlatform(value))),
                };
            }
            "device" => {
                if spec.device_count == MAX_DEVICES {
                    return Err(err(ConfigErrorKind::TooManyDevices(spec.name)));
                }
                // Checked above; parses again only to avoid holding two borrows.
                let dev = parse_device(value).ok_or(err(ConfigErrorKind::BadDevice(value)))?;
                spec.devices[spec.device_count] = dev;
                spec.device_count += 1;
            }
            _ => return Err(err(ConfigErrorKind::UnknownKey(key))),
        }
    }
    if cfg.count == 0 {
        return Err(ConfigError { line: last_line, kind: ConfigErrorKind::Empty });
    }
    finish(&cfg, Some(cfg.count - 1))?;
    Ok(cfg)
}

fn known_key(key: &str) -> Option<&'static str> {
    [
        "partition",
        "memory",
        "backing",
        "cpus",
        "image",
        "device",
        "unreset-devices",
        "platform",
        "initrd",
    ]
    .into_iter()
    .find(|k| *k == key)
}

/// Checks a finished partition: memory given, in range, a whole number of pages.
fn finish<'a>(cfg: &PartitionConfig<'a>, index: Option<usize>) -> Result<(), ConfigError<'a>> {
    let Some(p) = index.and_then(|i| cfg.partitions[i]) else { return Ok(()) };
    let err = |kind| ConfigError { line: p.line, kind };
    if p.memory == 0 {
        return Err(err(ConfigErrorKind::MissingMemory(p.name)));
    }
    if p.memory < MIN_MEMORY {
        return Err(err(ConfigErrorKind::TooLittleMemory(p.memory)));
    }
    if p.memory > MAX_MEMORY {
        return Err(err(ConfigErrorKind::TooMuchMemory(p.memory)));
    }
    if p.memory % p.backing.page_size() != 0 {
        return Err(err(ConfigErrorKind::NotMultipleOfBacking {
            memory: p.memory,
            backing: p.backing,
        }));
    }
    if !matches!(p.image, GuestImage::Linux(_)) {
        if p.initrd.is_some() {
            return Err(err(ConfigErrorKind::LinuxOnly { key: "initrd", partition: p.name }));
        }
        if p.cmdline.is_some() {
            return Err(err(ConfigErrorKind::LinuxOnly { key: "cmdline", partition: p.name }));
        }
    }
    Ok(())
}

/// The quoted value of a `cmdline "TEXT"` line (`None`: the line is not a `cmdline` one).
/// TEXT is printable ASCII without `"`, at most [`MAX_CMDLINE`] bytes; after the closing
/// quote only a comment may follow.
fn cmdline_value(raw: &str) -> Option<Result<&str, ConfigErrorKind<'_>>> {
    let rest = raw.trim_start().strip_prefix("cmdline")?;
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Some(Err(ConfigErrorKind::MissingValue("cmdline")));
    }
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(Err(ConfigErrorKind::UnquotedCmdline(rest)));
    };
    let Some(close) = quoted.find('"') else {
        return Some(Err(ConfigErrorKind::UnterminatedCmdline));
    };
    let (value, after) = (&quoted[..close], quoted[close + 1..].trim_start());
    if !after.is_empty() && !after.starts_with('#') {
        return Some(Err(ConfigErrorKind::ExtraWords("cmdline")));
    }
    if let Some(bad) = value.bytes().find(|b| !(0x20..0x7f).contains(b)) {
        return Some(Err(ConfigErrorKind::BadCmdlineByte(bad)));
    }
    if value.len() > MAX_CMDLINE {
        return Some(Err(ConfigErrorKind::CmdlineTooLong(value.len())));
    }
    Some(Ok(value))
}

fn valid_name(n: &str) -> bool {
    (1..=MAX_NAME).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `4096`, `0x1000`, `512K`, `64M`, `1G` (also `KiB`, `MiB`, `GiB`).
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, shift) = [("KiB", 10), ("MiB", 20), ("GiB", 30), ("K", 10), ("M", 20), ("G", 30)]
        .iter()
        .find_map(|(suffix, shift)| s.strip_suffix(suffix).map(|d| (d, *shift)))
        .unwrap_or((s, 0));
    let n = match digits.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().ok()?
        }
        None => return None,
    };
    n.checked_mul(1u64 << shift)
}

/// `[SSSS:]BB:DD.F`, hexadecimal.
pub fn parse_device(s: &str) -> Option<DeviceAddr> {
    let (rest, function) = s.rsplit_once('.')?;
    let mut parts = rest.rsplit(':');
    let device = parts.next()?;
    let bus = parts.next()?;
    let segment = parts.next().unwrap_or("0");
    if parts.next().is_some() {
        return None;
    }
    let hex = |t: &str, max: u32| {
        let ok = !t.is_empty() && t.len() <= 4 && t.bytes().all(|b| b.is_ascii_hexdigit());
        u32::from_str_radix(t, 16).ok().filter(|v| ok && *v <= max)
    };
    Some(DeviceAddr {
        segment: hex(segment, 0xffff)? as u16,
        bus: hex(bus, 0xff)? as u8,
        device: hex(device, 0x1f)? as u8,
        function: hex(function, 7)? as u8,
    })
}

/// The configuration used when the boot loader passes none: two partitions, a 2M-backed
/// one owning edu at 00:04.0 and a 4K-backed one owning edu at 00:05.0 (the devices
/// `cargo xtask qemu` gives the machine).
pub const DEFAULT_CONFIG: &str = "\
# Built-in default: used when no boot module ending in .cfg is given.
partition alpha
  memory 64M
  backing 2m
  cpus 1
  image builtin
  device 00:04.0
partition beta
  memory 32M
  backing 4k
  image builtin
  device 00:05.0
";

#[cfg(test)]
mod tests;
