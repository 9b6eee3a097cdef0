//! A 16550A UART, the smallest Linux's 8250 driver accepts as a console: the scratch
//! register, IER read-back, the divisor latch (DLAB), MCR loopback reflected in MSR, the
//! FIFO bits in IIR once FCR enables them, LSR always "transmitter empty", and the THR
//! interrupt (IIR 0x02, [`Uart16550::irq_pending`]) for a controller that wants IRQ 4.
//! Nothing is ever received. What the guest transmits is collected into lines and shown
//! on the host console as the partition's text: `partition NAME: guest says: "LINE"`,
//! escaped (`guest::hypercall::Escaped`) so it can never end a line or pass for one of
//! the hypervisor's.

use super::PortDevice;
use alloc::string::String;
use alloc::vec::Vec;

/// COM1's base port.
pub const COM1: u16 = 0x3F8;
/// Longest line kept before it is shown anyway (a guest that never sends a newline).
const MAX_LINE: usize = 256;

// Register offsets and bits (the 16550A data sheet; Linux's include/uapi/linux/serial_reg.h).
/// The ISA interrupt line a PC wires COM1 to.
pub const IRQ: u8 = 4;
const IER_THRI: u8 = 1 << 1;
const IIR_NO_INT: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
const IIR_FIFO_ENABLED: u8 = 0xC0;
const FCR_ENABLE_FIFO: u8 = 1 << 0;
const LCR_DLAB: u8 = 1 << 7;
const MCR_LOOP: u8 = 1 << 4;
/// LSR: transmit holding register empty, transmitter empty.
const LSR_IDLE: u8 = 0x60;
/// MSR without loopback: carrier, data set ready, clear to send.
const MSR_CONNECTED: u8 = 0xB0;

/// One emulated 16550A at `base`.
pub struct Uart16550 {
    base: u16,
    /// The partition the text is shown under.
    name: String,
    ier: u8,
    lcr: u8,
    mcr: u8,
    fcr: u8,
    scratch: u8,
    divisor: u16,
    /// A THR-empty interrupt is owed (set when the transmitter empties, cleared by an
    /// IIR read that reports it or by the next THR write).
    thr_pending: bool,
    line: Vec<u8>,
    /// Bytes the guest transmitted.
    pub transmitted: u64,
    /// Lines shown on the host console.
    pub lines: u64,
}

impl Uart16550 {
    /// A UART at `base` whose output is shown under partition `name`.
    pub fn new(base: u16, name: &str) -> Uart16550 {
        Uart16550 {
            base,
            name: name.into(),
            ier: 0,
            lcr: 0,
            mcr: 0,
            fcr: 0,
            scratch: 0,
            divisor: 12,
            thr_pending: false,
            line: Vec::new(),
            transmitted: 0,
            lines: 0,
        }
    }

    /// Whether the UART asserts its interrupt line (IRQ 4 for COM1).
    pub fn irq_pending(&self) -> bool {
        self.ier & IER_THRI != 0 && self.thr_pending
    }

    /// Shows the collected line (if any) on the host console.
    pub fn flush(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        log::info!("partition {}: guest says: \"{}\"", self.name, guest::hypercall::Escaped(text));
        self.lines += 1;
        self.line.clear();
    }

    fn transmit(&mut self, byte: u8) {
        self.transmitted += 1;
        if byte == b'\n' {
            self.flush();
        } else {
            self.line.push(byte);
            if self.line.len() >= MAX_LINE {
                self.flush();
            }
        }
    }

    fn iir(&mut self) -> u8 {
        let fifo = if self.fcr & FCR_ENABLE_FIFO != 0 { IIR_FIFO_ENABLED } else { 0 };
        if self.irq_pending() {
            self.thr_pending = false;
            IIR_THRI | fifo
        } else {
            IIR_NO_INT | fifo
        }
    }

    fn msr(&self) -> u8 {
        if self.mcr & MCR_LOOP == 0 {
            return MSR_CONNECTED;
        }
        // Loopback: DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD.
        let m = self.mcr;
        (m & 1) << 5 | (m >> 1 & 1) << 4 | (m >> 2 & 1) << 6 | (m >> 3 & 1) << 7
    }
}

impl PortDevice for Uart16550 {
    fn claims(&self, port: u16) -> bool {
        (self.base..self.base + 8).contains(&port)
    }

    fn read(&mut self, port: u16, _size: u8) -> u32 {
        let dlab = self.lcr & LCR_DLAB != 0;
        u32::from(match port - self.base {
            0 if dlab => self.divisor as u8,
            0 => 0, // nothing is ever received
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.ier,
            2 => self.iir(),
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_IDLE,
            6 => self.msr(),
            _ => self.scratch,
        })
    }

    fn write(&mut self, port: u16, _size: u8, value: u32) {
        let v = value as u8;
        let dlab = self.lcr & LCR_DLAB != 0;
        match port - self.base {
            0 if dlab => self.divisor = self.divisor & 0xFF00 | u16::from(v),
            0 => {
                self.transmit(v);
                // Sent at once: the transmitter is empty again and says so.
                self.thr_pending = true;
            }
            1 if dlab => self.divisor = self.divisor & 0xFF | u16::from(v) << 8,
            1 => {
                let enabling = v & IER_THRI != 0 && self.ier & IER_THRI == 0;
                self.ier = v & 0x0F;
                if enabling {
                    self.thr_pending = true;
                }
            }
            // FCR: only the enable bit is kept (the FIFOs are always empty).
            2 => self.fcr = v & FCR_ENABLE_FIFO,
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1F,
            5 | 6 => {} // LSR and MSR are read-only
            _ => self.scratch = v,
        }
    }
}

impl Drop for Uart16550 {
    fn drop(&mut self) {
        self.flush();
    }
}
