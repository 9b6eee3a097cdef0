//! The serial console behind the `log` facade.
//!
//! Output is kept in a small early buffer until the console UART is chosen (`console=` on
//! the command line, else the UART the ACPI SPCR table names, else COM1, at 115200 baud by
//! default: see [`boot::console`]); choosing it replays the buffer, so nothing the boot
//! said before is lost. A failure before that point falls back to COM1.

mod clock;
mod uart;

pub use clock::tsc_hz;

use boot::console::{ConsoleUart, UartAccess};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use spin::Mutex;
use uart::Uart;

/// Bytes kept before the console is chosen (the boot's first screenful and more).
const EARLY_BYTES: usize = 16 * 1024;

struct Sink {
    uart: Option<Uart>,
    early: [u8; EARLY_BYTES],
    early_len: usize,
    early_dropped: usize,
    /// Whether a UART was chosen (output then goes to `uart`, or nowhere when it is None).
    chosen: bool,
}

static SINK: Mutex<Sink> = Mutex::new(Sink {
    uart: None,
    early: [0; EARLY_BYTES],
    early_len: 0,
    early_dropped: 0,
    chosen: false,
});
static LOGGER: SerialLogger = SerialLogger;

/// The chosen UART for the lock-free emergency path: kind (0 none, 1 port, 2 MMIO 8-bit,
/// 4 MMIO 32-bit) and base.
static ACTIVE_KIND: AtomicU8 = AtomicU8::new(0);
static ACTIVE_BASE: AtomicU64 = AtomicU64::new(0);

struct SerialLogger;

/// A time stamp formatted without allocating (the logger runs before the heap exists).
#[derive(Default)]
struct StampBuf {
    bytes: [u8; 32],
    len: usize,
}

impl Write for StampBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Installs the logger at `level`; output is buffered until [`select`]. Call once, early.
pub fn init(level: log::LevelFilter) {
    clock::init();
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

/// Changes the log level (from the command line's `log=`).
pub fn set_level(level: log::LevelFilter) {
    log::set_max_level(level);
}

/// Whether a console UART was chosen already.
pub fn chosen() -> bool {
    SINK.lock().chosen
}

/// Makes `uart` the console (MMIO registers must be mapped uncached already) and replays
/// what was said before. Returns false when no UART answers there; output is then
/// dropped, as on a machine without a serial port.
pub fn select(uart: ConsoleUart) -> bool {
    let mut u = Uart::new(uart);
    let ok = u.init(uart.baud);
    let (kind, base) = match uart.access {
        UartAccess::Port(p) => (1, p as u64),
        UartAccess::Mmio { base, stride } => (if stride == 4 { 4 } else { 2 }, base),
    };
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut s = SINK.lock();
        s.chosen = true;
        if ok {
            ACTIVE_BASE.store(base, Ordering::SeqCst);
            ACTIVE_KIND.store(kind, Ordering::SeqCst);
            let Sink { early, early_len, early_dropped, .. } = &mut *s;
            let (len, dropped) = (*early_len, *early_dropped);
            let mut w = Writer(&mut u);
            send_text(&mut w, &early[..len]);
            if dropped > 0 {
                let _ = writeln!(w, "[console: {dropped} early bytes were dropped]");
            }
            s.uart = Some(u);
        }
        s.early_len = 0;
    });
    ok
}

/// The UART the console uses, once one was chosen and answered.
pub fn active() -> Option<ConsoleUart> {
    let base = ACTIVE_BASE.load(Ordering::SeqCst);
    let access = match ACTIVE_KIND.load(Ordering::SeqCst) {
        1 => UartAccess::Port(base as u16),
        2 => UartAccess::Mmio { base, stride: 1 },
        4 => UartAccess::Mmio { base, stride: 4 },
        _ => return None,
    };
    Some(ConsoleUart { access, baud: boot::console::DEFAULT_BAUD })
}

/// Chooses COM1 when nothing was chosen yet (a failure before the console choice).
/// Never blocks: on the panic and exit paths the lock may be held by the code that
/// failed, and then nothing is chosen here.
pub fn fall_back() {
    let unchosen = SINK.try_lock().is_some_and(|s| !s.chosen);
    if unchosen {
        select(ConsoleUart::COM1);
    }
}

fn send_text(w: &mut Writer<'_>, bytes: &[u8]) {
    for &b in bytes {
        w.0.send(b);
    }
}

struct Writer<'a>(&'a mut Uart);

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.send(b'\r');
            }
            self.0.send(b);
        }
        Ok(())
    }
}

/// Appends text to the early buffer (newlines become CR LF there already).
struct EarlyWriter<'a>(&'a mut Sink);

impl Write for EarlyWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            for byte in if b == b'\n' { &b"\r\n"[..] } else { core::slice::from_ref(&b) } {
                let s = &mut *self.0;
                if s.early_len < EARLY_BYTES {
                    s.early[s.early_len] = *byte;
                    s.early_len += 1;
                } else {
                    s.early_dropped += 1;
                }
            }
        }
        Ok(())
    }
}

/// Writes formatted text to the console (no level, no prefix): test-runner output.
pub fn print(args: fmt::Arguments<'_>) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        let mut s = SINK.lock();
        if !s.chosen {
            let _ = EarlyWriter(&mut s).write_fmt(args);
        } else if let Some(uart) = s.uart.as_mut() {
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

/// Writes straight to the chosen UART (COM1 before one was chosen), bypassing the lock:
/// for the panic and exception paths, which may run while the lock is held by the code
/// that failed. A garbled interleave is better than a silent death.
pub fn emergency_print(args: fmt::Arguments<'_>) {
    if ACTIVE_KIND.load(Ordering::SeqCst) == 0 {
        // Not chosen yet: take the lock if it is free, so the early output comes first.
        fall_back();
    }
    let mut u = Uart::new(active().unwrap_or(ConsoleUart::COM1));
    let _ = Writer(&mut u).write_fmt(args);
}

impl log::Log for SerialLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let mut stamp = StampBuf::default();
            let _ = clock::stamp(&mut stamp);
            let stamp = core::str::from_utf8(&stamp.bytes[..stamp.len]).unwrap_or("");
            print(format_args!("{stamp}[{:5}] {}\n", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}
