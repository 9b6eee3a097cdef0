//! Boot-relative time stamps from the TSC, for log lines people paste next to Linux's
//! (`[    1.234567]`). The TSC rate is measured once against the PIT (channel 2, 10 ms,
//! bounded); where there is no PIT the stamps stay in raw TSC cycles, marked `c`.

use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

static START: AtomicU64 = AtomicU64::new(0);
/// TSC cycles per second; 0 while unknown.
static HZ: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// 10 ms of PIT input clock.
const PIT_COUNT: u64 = PIT_HZ / 100;
/// Polls of the PIT output before calibration gives up (a machine without a PIT).
const MAX_POLLS: u32 = 5_000_000;

fn rdtsc() -> u64 {
    crate::arch::tsc()
}

/// Marks the boot's time zero and measures the TSC rate. Call once, first thing.
pub fn init() {
    START.store(rdtsc(), Ordering::Relaxed);
    if let Some(hz) = calibrate() {
        HZ.store(hz, Ordering::Relaxed);
    }
}

/// PIT channel 2 in mode 0 counts 10 ms down once its gate is raised; its output (port
/// 0x61 bit 5) rises at zero. The TSC cycles in between give the rate.
fn calibrate() -> Option<u64> {
    let mut ctrl = Port::<u8>::new(0x61);
    let mut cmd = Port::<u8>::new(0x43);
    let mut ch2 = Port::<u8>::new(0x42);
    // SAFETY: ports 0x61 (NMI status/control: gate 2 and speaker bits only are changed),
    // 0x43 and 0x42 (PIT channel 2, the speaker timer nothing else uses) on a PC.
    let (start, end) = unsafe {
        let old = ctrl.read();
        ctrl.write(old & !0x03); // gate low, speaker off
        cmd.write(0xB0); // channel 2, lobyte/hibyte, mode 0, binary
        ch2.write(PIT_COUNT as u8);
        ch2.write((PIT_COUNT >> 8) as u8);
        ctrl.write((old & !0x03) | 0x01); // gate high: counting starts
        let start = rdtsc();
        let mut polls = 0;
        while ctrl.read() & 0x20 == 0 {
            polls += 1;
            if polls > MAX_POLLS {
                ctrl.write(old);
                return None;
            }
        }
        let end = rdtsc();
        ctrl.write(old);
        (start, end)
    };
    let hz = end.wrapping_sub(start).saturating_mul(100);
    // Anything under 10 MHz is a broken measurement, not a processor.
    (hz >= 10_000_000).then_some(hz)
}

/// Writes the stamp for now: `[    1.234567] ` (seconds since boot), or `[123456789c] `
/// (TSC cycles) when the rate is unknown.
pub fn stamp(w: &mut impl core::fmt::Write) -> core::fmt::Result {
    let cycles = rdtsc().wrapping_sub(START.load(Ordering::Relaxed));
    match HZ.load(Ordering::Relaxed) {
        0 => write!(w, "[{cycles}c] "),
        hz => {
            let us = (cycles as u128 * 1_000_000 / hz as u128) as u64;
            write!(w, "[{:5}.{:06}] ", us / 1_000_000, us % 1_000_000)
        }
    }
}

/// The measured TSC rate in Hz (0 when unknown), for the boot log.
pub fn tsc_hz() -> u64 {
    HZ.load(Ordering::Relaxed)
}
