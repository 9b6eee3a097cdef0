//! The 8254 programmable interval timer (ports 0x40-0x43) and port 0x61's channel-2 gate
//! and OUT2 bit, as Linux uses them: channel 0 in mode 0 (one-shot) or 2/3 (periodic)
//! driving IRQ 0, channel 2 with its gate and output for TSC calibration, counter latch
//! and read-back commands, lobyte/hibyte access. Counting is binary (the BCD bit is kept
//! and reported, not honoured: Linux never sets it).
//!
//! Time is the [`Clock`] (the host TSC) scaled to the PIT's 1.193182 MHz input clock;
//! nothing ticks: counts, outputs and IRQ 0 edges are computed from the time a count was
//! loaded. Written from the 8254 data sheet, with QEMU's `hw/timer/i8254_common.c` and
//! KVM's `arch/x86/kvm/i8254.c` as references.

use super::{Clock, PortDevice};

/// The PIT's input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Read/write access states.
const RW_LSB: u8 = 1;
const RW_MSB: u8 = 2;
const RW_WORD0: u8 = 3;
const RW_WORD1: u8 = 4;

#[derive(Debug, Clone, Copy)]
struct Channel {
    /// The loaded count, 1..=0x10000 (0 written means 0x10000).
    count: u64,
    latched: u16,
    /// Which bytes of `latched` remain to be read (an RW state; 0: not latched).
    count_latched: u8,
    status_latched: Option<u8>,
    read_state: u8,
    write_state: u8,
    write_latch: u8,
    rw_mode: u8,
    mode: u8,
    bcd: bool,
    gate: bool,
    /// A count has been loaded since the last control word.
    running: bool,
    null_count: bool,
    /// PIT tick at which the count was loaded (or counting restarted).
    load: u64,
    /// PIT tick at which a low gate froze the count.
    paused: Option<u64>,
}

impl Channel {
    fn new(gate: bool) -> Channel {
        Channel {
            count: 0x10000,
            latched: 0,
            count_latched: 0,
            status_latched: None,
            read_state: RW_WORD0,
            write_state: RW_WORD0,
            write_latch: 0,
            rw_mode: RW_WORD0,
            mode: 0,
            bcd: false,
            gate,
            running: false,
            null_count: true,
            load: 0,
            paused: None,
        }
    }

    /// PIT ticks counted since the load, at `now`.
    fn elapsed(&self, now: u64) -> u64 {
        self.paused.unwrap_or(now).saturating_sub(self.load)
    }

    fn periodic(&self) -> bool {
        matches!(self.mode, 2 | 3)
    }

    fn current(&self, now: u64) -> u16 {
        if !self.running {
            return self.count as u16;
        }
        let d = self.elapsed(now);
        let c = self.count;
        let v = match self.mode {
            2 => c - d % c,
            3 => c - (2 * d) % c,
            _ => c.wrapping_sub(d),
        };
        v as u16
    }

    fn out(&self, now: u64) -> bool {
        if !self.running {
            // After a control word: low in mode 0, high in the others.
            return self.mode != 0;
        }
        let d = self.elapsed(now);
        let c = self.count;
        match self.mode {
            0 => d >= c,
            1 => d >= c,
            2 => d % c != c - 1,
            3 => d % c < c.div_ceil(2),
            _ => d != c,
        }
    }

    fn status(&self, now: u64) -> u8 {
        (self.out(now) as u8) << 7
            | (self.null_count as u8) << 6
            | (self.rw_mode & 3) << 4
            | self.mode << 1
            | self.bcd as u8
    }

    fn load_count(&mut self, value: u16, now: u64) {
        self.count = if value == 0 { 0x10000 } else { u64::from(value) };
        self.load = now;
        self.running = true;
        self.null_count = false;
        self.paused = (!self.gate).then_some(now);
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        match (self.gate, gate) {
            (true, false) if matches!(self.mode, 0 | 2 | 3 | 4) => self.paused = Some(now),
            (false, true) if matches!(self.mode, 0 | 4) => {
                if let Some(p) = self.paused.take() {
                    self.load = self.load.saturating_add(now.saturating_sub(p));
                }
            }
            (false, true) => {
                self.load = now;
                self.paused = None;
            }
            _ => {}
        }
        self.gate = gate;
    }

    fn latch(&mut self, now: u64) {
        if self.count_latched == 0 {
            self.latched = self.current(now);
            self.count_latched = self.rw_mode;
        }
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(s) = self.status_latched.take() {
            return s;
        }
        match self.count_latched {
            RW_LSB => {
                self.count_latched = 0;
                return self.latched as u8;
            }
            RW_MSB => {
                self.count_latched = 0;
                return (self.latched >> 8) as u8;
            }
            RW_WORD0 => {
                self.count_latched = RW_MSB;
                return self.latched as u8;
            }
            _ => {}
        }
        let count = self.current(now);
        match self.read_state {
            RW_LSB => count as u8,
            RW_MSB => (count >> 8) as u8,
            RW_WORD0 => {
                self.read_state = RW_WORD1;
                count as u8
            }
            _ => {
                self.read_state = RW_WORD0;
                (count >> 8) as u8
            }
        }
    }

    fn write(&mut self, value: u8, now: u64) {
        match self.write_state {
            RW_LSB => self.load_count(u16::from(value), now),
            RW_MSB => self.load_count(u16::from(value) << 8, now),
            RW_WORD0 => {
                self.write_latch = value;
                self.write_state = RW_WORD1;
            }
            _ => {
                self.load_count(u16::from(self.write_latch) | u16::from(value) << 8, now);
                self.write_state = RW_WORD0;
            }
        }
    }

    fn control(&mut self, value: u8) {
        let access = (value >> 4) & 3;
        self.rw_mode = access;
        self.read_state = access;
        self.write_state = access;
        let mode = (value >> 1) & 7;
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.bcd = value & 1 != 0;
        self.running = false;
        self.null_count = true;
        self.count_latched = 0;
        self.status_latched = None;
        self.paused = None;
    }
}

/// The three channels and port 0x61.
#[derive(Debug, Clone)]
pub struct Pit {
    channels: [Channel; 3],
    clock: Clock,
    /// TSC at PIT tick 0.
    origin: u64,
    speaker: bool,
    /// PIT tick up to which channel 0's IRQ 0 edges have been taken.
    irq0_seen: u64,
}

impl Pit {
    /// Power-on: no channel counting (the guest programs what it uses); gates of
    /// channels 0 and 1 high, channel 2's low.
    pub fn new(clock: Clock) -> Pit {
        let origin = clock.now();
        Pit {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            clock,
            origin,
            speaker: false,
            irq0_seen: 0,
        }
    }

    /// Now, in PIT ticks.
    fn now(&self) -> u64 {
        self.clock.ticks_of(self.clock.now().saturating_sub(self.origin), PIT_HZ)
    }

    /// The first IRQ 0 edge (a rising OUT0) after PIT tick `after`, if one will come.
    fn edge_after(&self, after: u64) -> Option<u64> {
        let c = &self.channels[0];
        if !c.running || c.paused.is_some() {
            return None;
        }
        if c.periodic() {
            let k = after.saturating_sub(c.load) / c.count + 1;
            Some(c.load + k * c.count)
        } else {
            Some(c.load + c.count).filter(|t| *t > after)
        }
    }

    /// Whether OUT0 rose (IRQ 0) since the last call; several periods that passed
    /// between two calls are one edge.
    pub fn take_irq0_edge(&mut self) -> bool {
        let now = self.now();
        let edge = self.edge_after(self.irq0_seen).is_some_and(|t| t <= now);
        self.irq0_seen = now;
        edge
    }

    /// TSC of the next IRQ 0 edge, if channel 0 will produce one.
    pub fn next_irq0_edge(&self) -> Option<u64> {
        let t = self.edge_after(self.irq0_seen)?;
        Some(self.origin.saturating_add(self.clock.cycles_of(t, PIT_HZ)))
    }

    /// Channel `c`'s current count (for tests and logs).
    pub fn count(&self, c: usize) -> u16 {
        self.channels.get(c).map_or(0, |ch| ch.current(self.now()))
    }

    fn port_61(&self) -> u8 {
        let now = self.now();
        // Bit 4 toggles with the DRAM refresh, every 15.085 us (18 PIT ticks).
        let refresh = (now / 18) & 1 != 0;
        (self.channels[2].gate as u8)
            | (self.speaker as u8) << 1
            | (refresh as u8) << 4
            | (self.channels[2].out(now) as u8) << 5
    }
}

impl PortDevice for Pit {
    fn claims(&self, port: u16) -> bool {
        matches!(port, 0x40..=0x43 | 0x61)
    }

    fn read(&mut self, port: u16, _size: u8) -> u32 {
        let now = self.now();
        u32::from(match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].read(now),
            0x61 => self.port_61(),
            _ => 0xFF,
        })
    }

    fn write(&mut self, port: u16, _size: u8, value: u32) {
        let value = value as u8;
        let now = self.now();
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].write(value, now),
            0x43 => {
                let c = usize::from(value >> 6);
                if c == 3 {
                    // Read-back: bit 5 clear latches counts, bit 4 clear latches status.
                    for (i, ch) in self.channels.iter_mut().enumerate() {
                        if value & (2 << i) == 0 {
                            continue;
                        }
                        if value & 0x20 == 0 {
                            ch.latch(now);
                        }
                        if value & 0x10 == 0 && ch.status_latched.is_none() {
                            ch.status_latched = Some(ch.status(now));
                        }
                    }
                } else if (value >> 4) & 3 == 0 {
                    self.channels[c].latch(now);
                } else {
                    self.channels[c].control(value);
                }
            }
            0x61 => {
                self.channels[2].set_gate(value & 1 != 0, now);
                self.speaker = value & 2 != 0;
            }
            _ => {}
        }
    }
}
