//! The guest's local APIC in xAPIC mode (the MMIO page at [`super::APIC_BASE`]; QEMU's
//! TCG has no x2APIC and no AVIC, so every access is trapped and emulated): ID, version,
//! TPR/PPR, EOI, LDR/DFR, SVR, ISR/TMR/IRR, ESR, the ICR for self-IPIs, the LVT entries
//! (timer, LINT0 and error work; LINT1, thermal and performance are stored), and the
//! timer in one-shot and periodic mode with its divide register.
//!
//! The timer counts at [`BUS_HZ`] divided by TDCR (1 GHz, as KVM and QEMU's APICs do),
//! computed from the [`Clock`]; Linux measures it against the TSC. LINT0 in ExtINT mode
//! passes the 8259's interrupt, whose vector the PIC gives (see `GuestPlatform::offer`).
//! Written from the Intel SDM vol. 3 chapter 11 and AMD APM vol. 2 chapter 16, with
//! KVM's `arch/x86/kvm/lapic.c` as a reference.

use super::Clock;

/// The timer's input clock before the divider.
pub const BUS_HZ: u64 = 1_000_000_000;

/// Register offsets in the MMIO page.
pub mod reg {
    /// Local APIC ID.
    pub const ID: u64 = 0x20;
    /// Version.
    pub const VERSION: u64 = 0x30;
    /// Task priority.
    pub const TPR: u64 = 0x80;
    /// Arbitration priority.
    pub const APR: u64 = 0x90;
    /// Processor priority.
    pub const PPR: u64 = 0xA0;
    /// End of interrupt.
    pub const EOI: u64 = 0xB0;
    /// Logical destination.
    pub const LDR: u64 = 0xD0;
    /// Destination format.
    pub const DFR: u64 = 0xE0;
    /// Spurious-interrupt vector.
    pub const SVR: u64 = 0xF0;
    /// In-service (8 registers).
    pub const ISR: u64 = 0x100;
    /// Trigger mode (8 registers).
    pub const TMR: u64 = 0x180;
    /// Interrupt request (8 registers).
    pub const IRR: u64 = 0x200;
    /// Error status.
    pub const ESR: u64 = 0x280;
    /// Interrupt command, low half (writing it sends).
    pub const ICR_LOW: u64 = 0x300;
    /// Interrupt command, destination.
    pub const ICR_HIGH: u64 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u64 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u64 = 0x330;
    /// LVT performance counters.
    pub const LVT_PERF: u64 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u64 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u64 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u64 = 0x370;
    /// Timer initial count.
    pub const TMICT: u64 = 0x380;
    /// Timer current count.
    pub const TMCCT: u64 = 0x390;
    /// Timer divide configuration.
    pub const TDCR: u64 = 0x3E0;
}

/// LVT mask bit.
const MASKED: u32 = 1 << 16;
/// LVT timer mode: periodic.
const PERIODIC: u32 = 1 << 17;
/// LVT delivery mode field (bits 10:8) value for ExtINT.
const DM_EXTINT: u32 = 7 << 8;
/// SVR: APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// ESR: a vector below 16 was received or sent.
const ESR_ILLEGAL_VECTOR: u32 = 1 << 6;
/// The LVT registers, in register order from 0x320.
const LVTS: usize = 6;
/// Bits of each LVT a guest may write (timer: vector, mask, periodic; TSC-deadline mode is
/// not offered). Thermal/perf: vector, delivery mode, mask. LINT0/1: also polarity and
/// trigger mode. Error: vector, mask.
const LVT_WRITABLE: [u32; LVTS] = [0x300FF, 0x107FF, 0x107FF, 0x1A7FF, 0x1A7FF, 0x100FF];

/// The local APIC.
#[derive(Debug, Clone)]
pub struct Lapic {
    clock: Clock,
    /// The IA32_APIC_BASE MSR value (for an MSR handler): base, BSP, enabled.
    pub apic_base_msr: u64,
    id: u32,
    tpr: u32,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    esr: u32,
    esr_pending: u32,
    icr: [u32; 2],
    lvt: [u32; LVTS],
    tmict: u32,
    tdcr: u32,
    /// TSC at which the current count started, while the timer runs.
    timer_start: Option<u64>,
    /// Periods of the running timer already signalled.
    timer_fired: u64,
    /// Interrupts accepted, EOIs seen, and IPIs the one-CPU APIC could not deliver.
    pub counts: LapicCounts,
}

/// What the local APIC did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LapicCounts {
    /// Timer expiries signalled (coalesced ones count once).
    pub timer: u64,
    /// EOI writes that retired a vector.
    pub eoi: u64,
    /// Self-IPIs accepted.
    pub ipi: u64,
    /// IPIs dropped (other CPUs, NMI/INIT/SIPI/SMI).
    pub ipi_dropped: u64,
    /// Interrupts refused (APIC disabled, vector below 16).
    pub refused: u64,
}

fn bit(v: u8) -> (usize, u32) {
    (usize::from(v / 32), 1 << (v % 32))
}

fn highest(regs: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| regs[i] != 0)
        .map(|i| (i * 32 + 31 - regs[i].leading_zeros() as usize) as u8)
}

impl Lapic {
    /// The state after reset, as firmware hands it to an OS: ID 0, software-disabled
    /// (SVR 0xFF), every LVT masked except LINT0, which is ExtINT so the 8259 reaches the
    /// CPU (virtual-wire mode, as KVM and QEMU set the boot CPU up).
    pub fn new(clock: Clock) -> Lapic {
        Lapic {
            clock,
            apic_base_msr: super::APIC_BASE | 1 << 11 | 1 << 8,
            id: 0,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xFF,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr: [0; 2],
            lvt: [MASKED, MASKED, MASKED, DM_EXTINT, MASKED, MASKED],
            tmict: 0,
            tdcr: 0,
            timer_start: None,
            timer_fired: 0,
            counts: LapicCounts::default(),
        }
    }

    fn enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    fn hw_enabled(&self) -> bool {
        self.apic_base_msr & 1 << 11 != 0
    }

    /// Whether LINT0 passes the 8259's interrupt: the APIC globally off, or LINT0
    /// unmasked in ExtINT mode.
    pub fn accepts_extint(&self) -> bool {
        let lint0 = self.lvt[3];
        !self.hw_enabled() || (lint0 & MASKED == 0 && lint0 & (7 << 8) == DM_EXTINT)
    }

    /// Processor priority: the TPR, or the highest in-service vector's class if higher.
    pub fn ppr(&self) -> u32 {
        let isrv = highest(&self.isr).map_or(0, u32::from);
        if self.tpr & 0xF0 >= isrv & 0xF0 {
            self.tpr & 0xFF
        } else {
            isrv & 0xF0
        }
    }

    /// A fixed interrupt with `vector` arrives (MSI, self-IPI, LVT): set in the IRR, or
    /// refused (ESR) for vectors below 16 and while the APIC is software-disabled.
    pub fn accept(&mut self, vector: u8) {
        if vector < 16 {
            self.esr_pending |= ESR_ILLEGAL_VECTOR;
            self.counts.refused += 1;
            let error = self.lvt[5];
            if error & MASKED == 0 && error as u8 >= 16 {
                self.accept(error as u8);
            }
            return;
        }
        if !self.enabled() || !self.hw_enabled() {
            self.counts.refused += 1;
            return;
        }
        let (i, m) = bit(vector);
        self.irr[i] |= m;
        self.tmr[i] &= !m;
    }

    /// The highest requested vector whose class is above the processor priority.
    pub fn deliverable(&self) -> Option<u8> {
        if !self.enabled() {
            return None;
        }
        let v = highest(&self.irr)?;
        (u32::from(v) & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// The guest took `vector`: IRR -> ISR.
    pub fn acknowledge(&mut self, vector: u8) {
        let (i, m) = bit(vector);
        self.irr[i] &= !m;
        self.isr[i] |= m;
    }

    fn eoi(&mut self) {
        if let Some(v) = highest(&self.isr) {
            let (i, m) = bit(v);
            self.isr[i] &= !m;
            self.counts.eoi += 1;
        }
    }

    /// Timer ticks per TSC cycle's worth: the divider TDCR selects (bits 0, 1, 3).
    fn divisor(&self) -> u64 {
        let v = (self.tdcr & 3) | ((self.tdcr & 8) >> 1);
        1 << ((v + 1) & 7)
    }

    /// Timer ticks since the count started.
    fn timer_elapsed(&self, start: u64) -> u64 {
        let cycles = self.clock.now().saturating_sub(start);
        self.clock.ticks_of(cycles, BUS_HZ) / self.divisor()
    }

    fn periodic(&self) -> bool {
        self.lvt[0] & PERIODIC != 0
    }

    fn current_count(&self) -> u32 {
        let Some(start) = self.timer_start else {
            return 0;
        };
        let initial = u64::from(self.tmict);
        let d = self.timer_elapsed(start);
        if self.periodic() {
            (initial - d % initial) as u32
        } else {
            initial.saturating_sub(d) as u32
        }
    }

    /// Signals the timer's expiries up to now (one interrupt for any number of missed
    /// periods); a one-shot timer stops at zero.
    pub fn update(&mut self) {
        let Some(start) = self.timer_start else {
            return;
        };
        let periods = self.timer_elapsed(start) / u64::from(self.tmict.max(1));
        if periods <= self.timer_fired {
            return;
        }
        self.timer_fired = periods;
        self.counts.timer += 1;
        if !self.periodic() {
            self.timer_start = None;
        }
        let lvt = self.lvt[0];
        if lvt & MASKED == 0 {
            self.accept(lvt as u8);
        }
    }

    /// TSC of the timer's next expiry while it runs.
    pub fn next_deadline(&self) -> Option<u64> {
        let start = self.timer_start?;
        let ticks = (self.timer_fired + 1)
            .saturating_mul(u64::from(self.tmict))
            .saturating_mul(self.divisor());
        Some(start.saturating_add(self.clock.cycles_of(ticks, BUS_HZ)))
    }

    fn set_timer(&mut self, initial: u32) {
        self.tmict = initial;
        self.timer_fired = 0;
        self.timer_start = (initial != 0).then(|| self.clock.now());
    }

    fn read_reg(&self, r: u64) -> u32 {
        let idx = ((r & 0x70) >> 4) as usize;
        match r {
            reg::ID => self.id << 24,
            // Version 0x14 (integrated), LVT entries 0-5.
            reg::VERSION => 0x0005_0014,
            reg::TPR => self.tpr,
            reg::APR => 0,
            reg::PPR => self.ppr(),
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            0x100..=0x170 => self.isr[idx],
            0x180..=0x1F0 => self.tmr[idx],
            0x200..=0x270 => self.irr[idx],
            reg::ESR => self.esr,
            reg::ICR_LOW => self.icr[0],
            reg::ICR_HIGH => self.icr[1],
            0x320..=0x370 => self.lvt[((r - 0x320) >> 4) as usize],
            reg::TMICT => self.tmict,
            reg::TMCCT => self.current_count(),
            reg::TDCR => self.tdcr,
            _ => 0,
        }
    }

    fn write_reg(&mut self, r: u64, v: u32) {
        match r {
            reg::ID => self.id = v >> 24,
            reg::TPR => self.tpr = v & 0xFF,
            reg::EOI => self.eoi(),
            reg::LDR => self.ldr = v & 0xFF00_0000,
            reg::DFR => self.dfr = v | 0x0FFF_FFFF,
            reg::SVR => {
                self.svr = v & 0x3FF;
                if !self.enabled() {
                    for l in self.lvt.iter_mut() {
                        *l |= MASKED;
                    }
                }
            }
            reg::ESR => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            reg::ICR_LOW => {
                self.icr[0] = v & !(1 << 12);
                self.send_ipi();
            }
            reg::ICR_HIGH => self.icr[1] = v & 0xFF00_0000,
            0x320..=0x370 => {
                let i = ((r - 0x320) >> 4) as usize;
                let mut v = v & LVT_WRITABLE[i];
                if !self.enabled() {
                    v |= MASKED;
                }
                if i == 0 && (v ^ self.lvt[0]) & PERIODIC != 0 {
                    // A mode change stops the timer (as KVM does).
                    self.timer_start = None;
                }
                self.lvt[i] = v;
            }
            reg::TMICT => self.set_timer(v),
            reg::TDCR => self.tdcr = v & 0xB,
            _ => {}
        }
    }

    /// The ICR was written: fixed interrupts to this CPU (self, all, or a destination
    /// naming it) are accepted; anything else is dropped (one CPU, no NMI/INIT/SIPI).
    fn send_ipi(&mut self) {
        let low = self.icr[0];
        let vector = low as u8;
        let fixed = (low >> 8) & 7 == 0;
        let dest = self.icr[1] >> 24;
        let to_me = match (low >> 18) & 3 {
            1 | 2 => true,
            3 => false,
            _ if low & 1 << 11 != 0 => (self.ldr >> 24) & dest != 0,
            _ => dest == self.id || dest == 0xFF,
        };
        if fixed && to_me {
            self.counts.ipi += 1;
            self.accept(vector);
        } else {
            self.counts.ipi_dropped += 1;
        }
    }

    /// A guest read of `size` bytes at `offset` in the page: the bytes of the 32-bit
    /// register there (bytes beyond it read 0).
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> u64 {
        let byte = offset & 0xF;
        if byte >= 4 {
            return 0;
        }
        let v = u64::from(self.read_reg(offset & 0xFF0)) >> (8 * byte);
        match size {
            1 => v & 0xFF,
            2 => v & 0xFFFF,
            _ => v,
        }
    }

    /// A guest write: only aligned 32-bit writes reach a register (others are ignored,
    /// as on KVM).
    pub fn mmio_write(&mut self, offset: u64, size: u8, value: u64) {
        if size == 4 && offset & 0xF == 0 {
            self.write_reg(offset, value as u32);
        }
    }
}
