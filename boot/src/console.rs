//! Which UART the hypervisor's console uses: the `console=` switch and the ACPI SPCR table.
//!
//! `console=` takes `com1`, `com2` (where server BMCs usually put Serial-over-LAN), `com3`,
//! `com4`, a port address (`0x2f8` or `io:0x2f8`), or an MMIO UART (`mmio:0xfedc9000` with
//! byte-wide registers, `mmio32:0xfedc9000` with 32-bit registers), optionally followed by
//! `,BAUD` (default 115200). Without it the console is the UART the SPCR table names, and
//! COM1 when there is no SPCR or it names a UART this console cannot drive.

use core::fmt;

/// The baud rate used unless `console=...,BAUD` or SPCR says otherwise (GRUB's and the
/// README's).
pub const DEFAULT_BAUD: u32 = 115_200;

/// How the UART's registers are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartAccess {
    /// x86 port I/O at this base.
    Port(u16),
    /// Memory-mapped registers at `base`, each `stride` bytes apart (1 or 4).
    Mmio {
        /// Physical address of register 0.
        base: u64,
        /// Byte distance between registers (and the access width): 1 or 4.
        stride: u8,
    },
}

/// A 16550-compatible UART and its line speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleUart {
    /// Its registers.
    pub access: UartAccess,
    /// Baud rate to program.
    pub baud: u32,
}

impl ConsoleUart {
    /// COM1 (port 0x3f8) at 115200: the default of last resort.
    pub const COM1: ConsoleUart =
        ConsoleUart { access: UartAccess::Port(0x3F8), baud: DEFAULT_BAUD };
}

impl fmt::Display for ConsoleUart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.access {
            UartAccess::Port(0x3F8) => write!(f, "COM1 (port 0x3f8)")?,
            UartAccess::Port(0x2F8) => write!(f, "COM2 (port 0x2f8)")?,
            UartAccess::Port(p) => write!(f, "port {p:#x}")?,
            UartAccess::Mmio { base, stride } => {
                write!(f, "MMIO UART at {base:#x} ({}-bit registers)", stride as u32 * 8)?
            }
        }
        write!(f, " at {} baud", self.baud)
    }
}

/// Why a `console=` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadConsole;

impl fmt::Display for BadConsole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a console: expected {CONSOLE_SYNTAX}")
    }
}

/// What `console=` accepts, in words (for error messages).
pub const CONSOLE_SYNTAX: &str =
    "com1, com2, com3, com4, a port (0x2f8 or io:0x2f8), mmio:ADDR or mmio32:ADDR, optionally followed by ,BAUD";

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn port(s: &str) -> Option<u16> {
    // A 16550 has 8 registers; the last must still be a port.
    number(s).and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0 && *p <= 0xFFF8)
}

/// Parses the value of `console=`.
pub fn parse_console(value: &str) -> Result<ConsoleUart, BadConsole> {
    let (uart, baud) = match value.split_once(',') {
        Some((u, b)) => (u, Some(b)),
        None => (value, None),
    };
    let baud = match baud {
        None => DEFAULT_BAUD,
        Some(b) => match b.parse::<u32>() {
            // The 16550 divisor is 115200 / baud: it must be a whole number.
            Ok(n) if n > 0 && n <= 115_200 && 115_200 % n == 0 => n,
            _ => return Err(BadConsole),
        },
    };
    let named = |n: &str| uart.eq_ignore_ascii_case(n);
    let access = match () {
        _ if named("com1") => UartAccess::Port(0x3F8),
        _ if named("com2") => UartAccess::Port(0x2F8),
        _ if named("com3") => UartAccess::Port(0x3E8),
        _ if named("com4") => UartAccess::Port(0x2E8),
        _ => {
            if let Some(a) = uart.strip_prefix("mmio32:") {
                UartAccess::Mmio { base: mmio_base(a)?, stride: 4 }
            } else if let Some(a) = uart.strip_prefix("mmio:") {
                UartAccess::Mmio { base: mmio_base(a)?, stride: 1 }
            } else {
                UartAccess::Port(port(uart.strip_prefix("io:").unwrap_or(uart)).ok_or(BadConsole)?)
            }
        }
    };
    Ok(ConsoleUart { access, baud })
}

fn mmio_base(s: &str) -> Result<u64, BadConsole> {
    // Below 2^47 (the kernel's identity-map limit) and not 0.
    number(s).filter(|a| *a != 0 && *a < 1 << 47).ok_or(BadConsole)
}

/// Why an SPCR table names no UART this console can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpcrProblem {
    /// Shorter than the 80 bytes of revision 1, or its length field disagrees.
    Truncated,
    /// Not a 16550/16450-compatible interface (the SPCR interface type).
    Interface(u8),
    /// The base address is in an address space other than memory or I/O, or is 0.
    Address {
        /// GAS address space id.
        space: u8,
        /// The address.
        address: u64,
    },
}

impl fmt::Display for SpcrProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpcrProblem::Truncated => f.write_str("the table is truncated"),
            SpcrProblem::Interface(t) => {
                write!(f, "interface type {t:#x} is not 16550-compatible")
            }
            SpcrProblem::Address { space, address } => {
                write!(f, "base address {address:#x} in address space {space} is not usable")
            }
        }
    }
}

/// Decodes an SPCR table (whole table, header included) into the UART it names. The
/// baud field (offset 58) maps 3/4/6/7 to 9600/19200/57600/115200; 0 ("as is") and
/// unknown values give [`DEFAULT_BAUD`].
pub fn parse_spcr(table: &[u8]) -> Result<ConsoleUart, SpcrProblem> {
    if table.len() < 80 {
        return Err(SpcrProblem::Truncated);
    }
    let length = u32::from_le_bytes([table[4], table[5], table[6], table[7]]) as usize;
    if length < 80 || length > table.len() {
        return Err(SpcrProblem::Truncated);
    }
    let interface = table[36];
    // 0: full 16550; 1: 16450 (a subset); 0x12: 16550-compatible described by the GAS.
    if !matches!(interface, 0 | 1 | 0x12) {
        return Err(SpcrProblem::Interface(interface));
    }
    let space = table[40];
    let width = table[41];
    let access_size = table[43];
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&table[44..52]);
    let address = u64::from_le_bytes(raw);
    let access = match space {
        1 => match u16::try_from(address) {
            Ok(p) if p != 0 && p <= 0xFFF8 => UartAccess::Port(p),
            _ => return Err(SpcrProblem::Address { space, address }),
        },
        0 if address != 0 && address < 1 << 47 => {
            // GAS access size 3 (dword) or a 32-bit register width: 32-bit registers.
            let stride = if access_size == 3 || width == 32 { 4 } else { 1 };
            UartAccess::Mmio { base: address, stride }
        }
        _ => return Err(SpcrProblem::Address { space, address }),
    };
    let baud = match table[58] {
        3 => 9600,
        4 => 19_200,
        6 => 57_600,
        7 => 115_200,
        _ => DEFAULT_BAUD,
    };
    Ok(ConsoleUart { access, baud })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ports() {
        assert_eq!(parse_console("com1"), Ok(ConsoleUart::COM1));
        assert_eq!(parse_console("COM2").map(|c| c.access), Ok(UartAccess::Port(0x2F8)));
        assert_eq!(parse_console("0x2e8").map(|c| c.access), Ok(UartAccess::Port(0x2E8)));
        assert_eq!(parse_console("io:0x3e8").map(|c| c.access), Ok(UartAccess::Port(0x3E8)));
        assert_eq!(parse_console("com2,9600").map(|c| c.baud), Ok(9600));
        assert_eq!(parse_console("com1").map(|c| c.baud), Ok(115_200));
    }

    #[test]
    fn mmio_uarts() {
        assert_eq!(
            parse_console("mmio32:0xfedc9000,57600"),
            Ok(ConsoleUart {
                access: UartAccess::Mmio { base: 0xfedc9000, stride: 4 },
                baud: 57600
            })
        );
        assert_eq!(
            parse_console("mmio:0xfe000000").map(|c| c.access),
            Ok(UartAccess::Mmio { base: 0xfe000000, stride: 1 })
        );
    }

    #[test]
    fn refuses_what_it_cannot_drive() {
        for bad in [
            "",
            "com5",
            "ttyS0",
            "0",
            "0x10000",
            "0xfffc",
            "io:",
            "mmio:",
            "mmio:0",
            "mmio:0x800000000000",
            "com1,",
            "com1,0",
            "com1,7",
            "com1,230400",
            "com1,fast",
            "mmio32:zz",
        ] {
            assert_eq!(parse_console(bad), Err(BadConsole), "{bad:?}");
        }
    }

    /// An SPCR table: revision 2, 80 bytes, with the given interface, GAS and baud field.
    fn spcr(interface: u8, space: u8, width: u8, access: u8, address: u64, baud: u8) -> Vec<u8> {
        let mut t = vec![0u8; 80];
        t[..4].copy_from_slice(b"SPCR");
        t[4..8].copy_from_slice(&80u32.to_le_bytes());
        t[8] = 2;
        t[36] = interface;
        t[40] = space;
        t[41] = width;
        t[43] = access;
        t[44..52].copy_from_slice(&address.to_le_bytes());
        t[58] = baud;
        t
    }

    #[test]
    fn spcr_io_and_mmio() {
        assert_eq!(
            parse_spcr(&spcr(0, 1, 8, 1, 0x2F8, 7)),
            Ok(ConsoleUart { access: UartAccess::Port(0x2F8), baud: 115_200 })
        );
        assert_eq!(parse_spcr(&spcr(0, 1, 8, 1, 0x3F8, 3)).map(|c| c.baud), Ok(9600));
        assert_eq!(parse_spcr(&spcr(0, 1, 8, 1, 0x3F8, 0)).map(|c| c.baud), Ok(115_200));
        assert_eq!(
            parse_spcr(&spcr(0x12, 0, 32, 3, 0xFEDC_9000, 6)),
            Ok(ConsoleUart {
                access: UartAccess::Mmio { base: 0xFEDC_9000, stride: 4 },
                baud: 57600
            })
        );
    }

    #[test]
    fn spcr_refusals_never_panic() {
        assert_eq!(parse_spcr(&[0; 10]), Err(SpcrProblem::Truncated));
        let mut short = spcr(0, 1, 8, 1, 0x3F8, 7);
        short[4..8].copy_from_slice(&200u32.to_le_bytes());
        assert_eq!(parse_spcr(&short), Err(SpcrProblem::Truncated));
        // PL011 (0x03) is an ARM UART.
        assert_eq!(parse_spcr(&spcr(3, 0, 32, 3, 0x1000, 7)), Err(SpcrProblem::Interface(3)));
        assert!(matches!(
            parse_spcr(&spcr(0, 2, 8, 1, 0x3F8, 7)),
            Err(SpcrProblem::Address { .. })
        ));
        assert!(matches!(
            parse_spcr(&spcr(0, 1, 8, 1, 0x1_0000, 7)),
            Err(SpcrProblem::Address { .. })
        ));
        assert!(matches!(parse_spcr(&spcr(0, 0, 8, 1, 0, 7)), Err(SpcrProblem::Address { .. })));
        for len in 0..120 {
            let mut t = spcr(0, 1, 8, 1, 0x3F8, 7);
            t.resize(len, 0xFF);
            let _ = parse_spcr(&t);
        }
    }
}
