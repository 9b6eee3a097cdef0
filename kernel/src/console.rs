//! Serial console (COM1, 16550) behind the `log` facade.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

static SERIAL: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);
static LOGGER: SerialLogger = SerialLogger;

struct SerialLogger;

/// Brings COM1 up and installs the logger at `level`. Safe to call once, early.
pub fn init(level: log::LevelFilter) {
    // SAFETY: 0x3F8 is COM1 on every PC-compatible machine and QEMU's q35; nothing else
    // in the hypervisor touches these ports.
    if let Ok(mut uart) = unsafe { Uart16550::new_port(0x3F8) } {
        // A missing or odd UART must not stop the boot: we then log nowhere.
        if uart.init(Config::default()).is_ok() {
            *SERIAL.lock() = Some(uart);
        }
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Changes the log level (from the command line's `log=`).
pub fn set_level(level: log::LevelFilter) {
    log::set_max_level(level);
}

struct Writer<'a>(&'a mut Uart16550<PioBackend>);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.split_inclusive('\n') {
            match chunk.strip_suffix('\n') {
                Some(line) => {
                    self.0.send_bytes_exact(line.as_bytes());
                    self.0.send_bytes_exact(b"\r\n");
                }
                None => self.0.send_bytes_exact(chunk.as_bytes()),
            }
        }
        Ok(())
    }
}

/// Writes formatted text to the serial port (no level, no prefix): test-runner output.
pub fn print(args: fmt::Arguments<'_>) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(uart) = SERIAL.lock().as_mut() {
            let _ = Writer(uart).write_fmt(args);
        }
    });
}

/// Like `print!` to the serial console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Writes straight to the port, bypassing the lock: for the panic and exception paths,
/// which may run while the lock is held by the code that failed.
pub fn emergency_print(args: fmt::Arguments<'_>) {
    // SAFETY: COM1 exists (see `init`); we only write bytes and a garbled interleave with a
    // writer we interrupted is better than a silent death.
    if let Ok(mut uart) = unsafe { Uart16550::new_port(0x3F8) } {
        let _ = Writer(&mut uart).write_fmt(args);
    }
}

impl log::Log for SerialLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            print(format_args!("[{:5}] {}\n", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}
