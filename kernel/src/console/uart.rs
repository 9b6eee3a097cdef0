//! A 16550-compatible UART at an I/O port or in MMIO (byte or 32-bit registers), with
//! every wait bounded: a UART that never drains costs a bounded delay per line, never a
//! hang.

use boot::console::{ConsoleUart, UartAccess};
use x86_64::instructions::port::Port;

const THR: u16 = 0;
const DLL: u16 = 0;
const DLM: u16 = 1;
const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
const SCR: u16 = 7;
const LCR_DLAB: u8 = 0x80;
const LCR_8N1: u8 = 0x03;
/// FIFO on, both FIFOs cleared, 14-byte receive trigger.
const FCR_FIFO: u8 = 0xC7;
/// DTR and RTS asserted (no OUT2: no interrupts).
const MCR_DTR_RTS: u8 = 0x03;
const LSR_THR_EMPTY: u8 = 0x20;
/// The 16550's baud clock divided by 16.
const BASE_BAUD: u32 = 115_200;
/// Register polls per byte before the UART is declared stuck: about 10 ms at 1 us a read,
/// ten times what a byte takes at 9600 baud.
const POLLS_PER_BYTE: u32 = 10_000;

/// One UART's registers.
#[derive(Debug, Clone, Copy)]
pub struct Uart {
    access: UartAccess,
    /// Set once a byte could not be sent in time: further output is dropped.
    stuck: bool,
}

impl Uart {
    /// A handle on `uart`'s registers. MMIO registers must already be mapped uncached.
    pub fn new(uart: ConsoleUart) -> Uart {
        Uart { access: uart.access, stuck: false }
    }

    fn read(&self, reg: u16) -> u8 {
        match self.access {
            // SAFETY: reading a UART register has no side effect beyond the UART (RBR/LSR
            // reads clear receive state, which the console never uses); the port was
            // named by the command line, SPCR, or is COM1.
            UartAccess::Port(base) => unsafe { Port::<u8>::new(base + reg).read() },
            UartAccess::Mmio { base, stride } => {
                let addr = base + reg as u64 * stride as u64;
                // SAFETY: the console maps the UART's page uncached before handing it here
                // (`select`); the access width is the one the UART declared.
                unsafe {
                    if stride == 4 {
                        core::ptr::read_volatile(addr as *const u32) as u8
                    } else {
                        core::ptr::read_volatile(addr as *const u8)
                    }
                }
            }
        }
    }

    fn write(&self, reg: u16, value: u8) {
        match self.access {
            // SAFETY: as in `read`; only UART registers are written.
            UartAccess::Port(base) => unsafe { Port::<u8>::new(base + reg).write(value) },
            UartAccess::Mmio { base, stride } => {
                let addr = base + reg as u64 * stride as u64;
                // SAFETY: as in `read`.
                unsafe {
                    if stride == 4 {
                        core::ptr::write_volatile(addr as *mut u32, value as u32)
                    } else {
                        core::ptr::write_volatile(addr as *mut u8, value)
                    }
                }
            }
        }
    }

    /// Whether a UART answers (its scratch register holds what is written).
    pub fn present(&self) -> bool {
        let old = self.read(SCR);
        let ok = [0x5A, 0xA5].iter().all(|&v| {
            self.write(SCR, v);
            self.read(SCR) == v
        });
        self.write(SCR, old);
        ok
    }

    /// Programs 8N1 at `baud` with the FIFOs on and interrupts off; false when no UART
    /// answers.
    pub fn init(&mut self, baud: u32) -> bool {
        if !self.present() {
            return false;
        }
        let divisor = (BASE_BAUD / baud.clamp(1, BASE_BAUD)).max(1);
        self.write(IER, 0);
        self.write(LCR, LCR_DLAB);
        self.write(DLL, divisor as u8);
        self.write(DLM, (divisor >> 8) as u8);
        self.write(LCR, LCR_8N1);
        self.write(FCR, FCR_FIFO);
        self.write(MCR, MCR_DTR_RTS);
        true
    }

    /// Sends one byte, waiting (bounded) for room.
    pub fn send(&mut self, byte: u8) {
        if self.stuck {
            return;
        }
        for _ in 0..POLLS_PER_BYTE {
            if self.read(LSR) & LSR_THR_EMPTY != 0 {
                self.write(THR, byte);
                return;
            }
            core::hint::spin_loop();
        }
        self.stuck = true;
    }
}
