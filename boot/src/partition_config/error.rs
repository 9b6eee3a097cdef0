//! Why a partition configuration is refused, with a message that names the line.

use super::{Backing, DeviceAddr, MAX_CMDLINE, MAX_DEVICES, MAX_NAME, MAX_PARTITIONS};
use core::fmt;

/// What is wrong with a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind<'a> {
    /// No partition at all.
    Empty,
    /// A key this format does not have.
    UnknownKey(&'a str),
    /// A partition setting before the first `partition` line.
    OutsidePartition(&'a str),
    /// A key with no value.
    MissingValue(&'static str),
    /// A key followed by more than one value.
    ExtraWords(&'static str),
    /// The same setting twice in one partition.
    Repeated(&'static str),
    /// A name that is empty, too long or uses other characters than [a-z0-9_-].
    BadName(&'a str),
    /// Two partitions with the same name.
    DuplicateName(&'a str),
    /// More than [`MAX_PARTITIONS`].
    TooManyPartitions,
    /// A partition without a `memory` line.
    MissingMemory(&'a str),
    /// A size that is not a number with an optional K/M/G suffix, or overflows.
    BadSize(&'a str),
    /// Less than [`MIN_MEMORY`].
    TooLittleMemory(u64),
    /// More than [`MAX_MEMORY`].
    TooMuchMemory(u64),
    /// Memory not a whole number of backing pages.
    NotMultipleOfBacking {
        /// Bytes configured.
        memory: u64,
        /// The backing it must be a multiple of.
        backing: Backing,
    },
    /// A backing other than `4k` or `2m`.
    BadBacking(&'a str),
    /// A CPU count that is not a positive number.
    BadCpus(&'a str),
    /// More CPUs than supported.
    TooManyCpus(u32),
    /// An image other than `builtin`, `module:NAME` or `linux:NAME`.
    BadImage(&'a str),
    /// `initrd` or `cmdline` for a partition whose image is not `linux:NAME`.
    LinuxOnly {
        /// The key.
        key: &'static str,
        /// The partition.
        partition: &'a str,
    },
    /// A `cmdline` value that does not start with a double quote.
    UnquotedCmdline(&'a str),
    /// A `cmdline` value with no closing double quote.
    UnterminatedCmdline,
    /// A `cmdline` byte that is not printable ASCII.
    BadCmdlineByte(u8),
    /// A `cmdline` longer than [`MAX_CMDLINE`] bytes.
    CmdlineTooLong(usize),
    /// `unreset-devices` other than `refuse` or `allow`.
    BadUnreset(&'a str),
    /// `platform` is neither `none` nor `pc`.
    BadPlatform(&'a str),
    /// A device address that does not parse.
    BadDevice(&'a str),
    /// More than [`MAX_DEVICES`] in one partition.
    TooManyDevices(&'a str),
    /// A device given to two partitions (or twice to one).
    DeviceTwice {
        /// The device.
        device: DeviceAddr,
        /// The partition that had it first.
        first: &'a str,
        /// The partition that names it again.
        second: &'a str,
    },
}

/// A refused configuration: what and where (1-based line; 0 when not tied to one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError<'a> {
    /// The line at fault.
    pub line: usize,
    /// What is wrong.
    pub kind: ConfigErrorKind<'a>,
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition configuration line {}: {}", self.line, self.kind)
    }
}

impl fmt::Display for ConfigErrorKind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConfigErrorKind as K;
        match *self {
            K::Empty => f.write_str("no partition defined (expected `partition NAME`)"),
            K::UnknownKey(k) => write!(
                f,
                "unknown key `{k}` (known: partition, memory, backing, cpus, image, device, unreset-devices, initrd, cmdline)"
            ),
            K::OutsidePartition(k) => write!(f, "`{k}` before any `partition NAME` line"),
            K::MissingValue(k) => write!(f, "`{k}` needs a value"),
            K::ExtraWords(k) => write!(f, "`{k}` takes exactly one value"),
            K::Repeated(k) => write!(f, "`{k}` given twice for the same partition"),
            K::BadName(n) => {
                write!(f, "partition name `{n}` must be 1-{MAX_NAME} characters of a-z, 0-9, _ or -")
            }
            K::DuplicateName(n) => write!(f, "partition `{n}` defined twice"),
            K::TooManyPartitions => write!(f, "more than {MAX_PARTITIONS} partitions"),
            K::MissingMemory(n) => write!(f, "partition `{n}` has no `memory` line"),
            K::BadSize(s) => write!(f, "`{s}` is not a size (bytes, or a number with K, M or G)"),
            K::TooLittleMemory(m) => {
                write!(f, "memory {m:#x} is too little: a partition needs at least 2 MiB")
            }
            K::TooMuchMemory(m) => write!(f, "memory {m:#x} exceeds the 3 GiB a partition may have"),
            K::NotMultipleOfBacking { memory, backing } => write!(
                f,
                "memory {memory:#x} is not a multiple of the {backing} backing page ({:#x} bytes)",
                backing.page_size()
            ),
            K::BadBacking(b) => write!(f, "backing `{b}` is neither `4k` nor `2m`"),
            K::BadCpus(c) => write!(f, "cpus `{c}` is not a positive number"),
            K::TooManyCpus(n) => write!(
                f,
                "{n} CPUs requested but a partition supports only 1 virtual CPU for now"
            ),
            K::BadImage(i) => {
                write!(f, "image `{i}` is none of `builtin`, `module:NAME` and `linux:NAME`")
            }
            K::LinuxOnly { key, partition } => write!(
                f,
                "`{key}` is for Linux guests only, but partition `{partition}` does not run `image linux:NAME`"
            ),
            K::UnquotedCmdline(v) => {
                write!(f, "cmdline `{v}` must be in double quotes: cmdline \"console=ttyS0 ...\"")
            }
            K::UnterminatedCmdline => f.write_str("cmdline has no closing double quote"),
            K::BadCmdlineByte(b) => {
                write!(f, "cmdline byte {b:#04x} is not printable ASCII (and `\"` cannot be inside)")
            }
            K::CmdlineTooLong(n) => {
                write!(f, "cmdline of {n} bytes exceeds the {MAX_CMDLINE} a Linux kernel takes")
            }
            K::BadUnreset(v) => write!(f, "unreset-devices `{v}` is neither `refuse` nor `allow`"),
            K::BadPlatform(v) => write!(f, "platform `{v}` is neither `none` nor `pc`"),
            K::BadDevice(d) => write!(f, "device `{d}` is not a PCI address [SSSS:]BB:DD.F"),
            K::TooManyDevices(n) => {
                write!(f, "partition `{n}` names more than {MAX_DEVICES} devices")
            }
            K::DeviceTwice { device, first, second } if first == second => {
                write!(f, "device {device} listed twice for partition `{first}`")
            }
            K::DeviceTwice { device, first, second } => write!(
                f,
                "device {device} is assigned to both `{first}` and `{second}`: a device belongs to one partition"
            ),
        }
    }
}
