//! The guest platform's devices as state machines, driven by hand (a manual clock): the
//! 8259 pair, the 8254 and port 0x61, the local APIC and its timer, and hostile input to
//! each (random port and register traffic never panics).

use crate::ensure;
use crate::partition::platform::lapic::{reg, Lapic};
use crate::partition::platform::pic::Pic;
use crate::partition::platform::pit::{Pit, PIT_HZ};
use crate::partition::platform::{Clock, GuestPlatform, PortDevice};
use crate::testing::{TestContext, TestResult};

/// A TSC of exactly 2000 PIT ticks per... 2000 cycles per PIT tick (about 2.39 GHz).
const TSC_HZ: u64 = PIT_HZ * 2000;

fn clock() -> Clock {
    Clock::manual(TSC_HZ, 1 << 40)
}

/// ICW1-4 as Linux's `init_8259A` sends them: master at 0x20, slave at 0x28 on IRQ 2.
fn init_pic(pic: &mut Pic) {
    for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x01)] {
        pic.write(port, 1, v);
    }
    for (port, v) in [(0xA0, 0x11), (0xA1, 0x28), (0xA1, 0x02), (0xA1, 0x01)] {
        pic.write(port, 1, v);
    }
}

fn pulse(pic: &mut Pic, line: u8) {
    pic.set_irq(line, true);
    pic.set_irq(line, false);
}

/// Linux's probe, initialisation, masks, IRR/ISR read-back, EOIs, cascade, priority,
/// auto-EOI, poll and ELCR.
pub fn pic(_: &mut TestContext<'_>) -> TestResult {
    let mut pic = Pic::new();
    // The probe: a mask written to 0x21 reads back.
    pic.write(0x21, 1, 0x5A);
    ensure!(pic.read(0x21, 1) == 0x5A, "IMR read back {:#x}", pic.read(0x21, 1));
    init_pic(&mut pic);
    ensure!(
        pic.imr(0) == 0 && pic.imr(1) == 0,
        "ICW1 leaves masks {:#x}/{:#x}",
        pic.imr(0),
        pic.imr(1)
    );
    pic.write(0x21, 1, 0xFE);
    pic.write(0xA1, 1, 0xFF);
    // A masked line is requested (IRR) but not signalled.
    pulse(&mut pic, 1);
    ensure!(!pic.output(), "masked IRQ 1 signalled");
    ensure!(pic.read(0x20, 1) & 2 != 0 && pic.irr(0) & 2 != 0, "IRR does not show IRQ 1");
    pulse(&mut pic, 0);
    ensure!(pic.output() && pic.peek_vector() == 0x20, "IRQ 0 gives {:#x}", pic.peek_vector());
    ensure!(pic.acknowledge() == 0x20, "acknowledge is not vector 0x20");
    ensure!(!pic.output(), "IRQ 0 still signalled after INTA");
    pic.write(0x20, 1, 0x0B); // OCW3: read ISR
    ensure!(pic.read(0x20, 1) == 1, "ISR {:#x} after INTA", pic.read(0x20, 1));
    // While IRQ 0 is in service another IRQ 0 waits for the EOI.
    pulse(&mut pic, 0);
    ensure!(!pic.output(), "IRQ 0 nested into itself");
    pic.write(0x20, 1, 0x60); // specific EOI, line 0
    ensure!(pic.isr(0) == 0 && pic.output(), "specific EOI did not retire IRQ 0");
    ensure!(pic.acknowledge() == 0x20, "second IRQ 0");
    pic.write(0x20, 1, 0x20); // non-specific EOI
    ensure!(pic.isr(0) == 0, "non-specific EOI left ISR {:#x}", pic.isr(0));
    // The slave (IRQ 8-15) through the cascade.
    pic.write(0x21, 1, 0xFA);
    pic.write(0xA1, 1, 0xFE);
    pulse(&mut pic, 8);
    ensure!(pic.output() && pic.peek_vector() == 0x28, "IRQ 8 gives {:#x}", pic.peek_vector());
    ensure!(pic.acknowledge() == 0x28, "IRQ 8 acknowledge");
    ensure!(pic.isr(0) == 4 && pic.isr(1) == 1, "cascade ISRs {:#x}/{:#x}", pic.isr(0), pic.isr(1));
    pic.write(0xA0, 1, 0x60);
    pic.write(0x20, 1, 0x62);
    ensure!(pic.isr(0) == 0 && pic.isr(1) == 0, "EOIs left {:#x}/{:#x}", pic.isr(0), pic.isr(1));
    // Priority: IRQ 3 in service blocks IRQ 4, not IRQ 0.
    pic.write(0x21, 1, 0x00);
    pic.write(0x20, 1, 0x0A); // OCW3: read IRR again
    let _ = pic.read(0x20, 1);
    while pic.output() {
        let _ = pic.acknowledge();
        pic.write(0x20, 1, 0x20);
    }
    pulse(&mut pic, 3);
    ensure!(pic.acknowledge() == 0x23, "IRQ 3");
    pulse(&mut pic, 4);
    ensure!(!pic.output(), "IRQ 4 preempted IRQ 3");
    pulse(&mut pic, 0);
    ensure!(pic.acknowledge() == 0x20, "IRQ 0 did not preempt IRQ 3");
    pic.write(0x20, 1, 0x20); // retires IRQ 0 (highest in service)
    ensure!(pic.isr(0) == 8, "non-specific EOI retired {:#x}", pic.isr(0) ^ 9);
    pic.write(0x20, 1, 0x20);
    ensure!(pic.acknowledge() == 0x24, "IRQ 4 after IRQ 3's EOI");
    pic.write(0x20, 1, 0x20);
    // Nothing pending: the spurious IRQ 7.
    ensure!(pic.acknowledge() == 0x27, "spurious vector");
    // Auto-EOI: nothing stays in service.
    for (port, v) in [(0x20, 0x11), (0x21, 0x20), (0x21, 0x04), (0x21, 0x03)] {
        pic.write(port, 1, v);
    }
    pulse(&mut pic, 5);
    ensure!(pic.acknowledge() == 0x25 && pic.isr(0) == 0, "auto-EOI kept ISR {:#x}", pic.isr(0));
    // Poll: OCW3 with P, then a read acknowledges.
    pulse(&mut pic, 6);
    pic.write(0x20, 1, 0x0C);
    ensure!(pic.read(0x20, 1) == 0x86, "poll did not return line 6");
    ensure!(!pic.output(), "polled line still requested");
    // ELCR: IRQ 0-2 cannot be level; a level line stays requested while high.
    pic.write(0x4D0, 1, 0xFF);
    ensure!(pic.read(0x4D0, 1) == 0xF8, "ELCR0 {:#x}", pic.read(0x4D0, 1));
    pic.write(0x4D1, 1, 0xFF);
    ensure!(pic.read(0x4D1, 1) == 0xDE && pic.elcr(1) == 0xDE, "ELCR1 {:#x}", pic.read(0x4D1, 1));
    init_pic(&mut pic);
    pic.set_irq(3, true);
    ensure!(pic.acknowledge() == 0x23, "level IRQ 3");
    pic.write(0x20, 1, 0x20);
    ensure!(pic.output(), "level IRQ 3 not requested again while high");
    pic.set_irq(3, false);
    ensure!(!pic.output(), "level IRQ 3 requested after going low");
    Ok(())
}

fn pit_cmd(pit: &mut Pit, v: u32) {
    pit.write(0x43, 1, v);
}

fn read_count(pit: &mut Pit, port: u16) -> u16 {
    let lo = pit.read(port, 1);
    let hi = pit.read(port, 1);
    (lo | hi << 8) as u16
}

/// Channel 0 periodic and one-shot edges (with coalescing and deadlines), counting, the
/// latch and read-back commands, lobyte-only access, channel 2 with its gate and OUT2.
pub fn pit(_: &mut TestContext<'_>) -> TestResult {
    let clock = clock();
    let tick = TSC_HZ / PIT_HZ;
    let mut pit = Pit::new(clock.clone());
    ensure!(
        !pit.take_irq0_edge() && pit.next_irq0_edge().is_none(),
        "unprogrammed channel 0 ticks"
    );
    // Mode 2, 1000 ticks.
    pit_cmd(&mut pit, 0x34);
    pit.write(0x40, 1, 1000 & 0xFF);
    pit.write(0x40, 1, 1000 >> 8);
    let t0 = clock.now();
    let deadline = pit.next_irq0_edge().ok_or("no deadline in mode 2")?;
    ensure!(
        deadline.abs_diff(t0 + 1000 * tick) <= tick,
        "deadline {} cycles after load",
        deadline - t0
    );
    clock.advance(400 * tick);
    let c = pit.count(0);
    ensure!((599..=601).contains(&c), "count {c} after 400 of 1000 ticks");
    ensure!(!pit.take_irq0_edge(), "edge before the period ended");
    clock.advance(600 * tick);
    ensure!(pit.take_irq0_edge(), "no edge after one period");
    ensure!(!pit.take_irq0_edge(), "one period gave two edges");
    // Three periods pass unobserved: one edge (coalesced), then the next one on time.
    clock.advance(3000 * tick);
    ensure!(pit.take_irq0_edge() && !pit.take_irq0_edge(), "missed periods not one edge");
    let next = pit.next_irq0_edge().ok_or("no next edge")?;
    ensure!(
        next > clock.now() && next - clock.now() <= 1000 * tick,
        "next edge {} cycles away",
        next - clock.now()
    );
    // Counter latch: the count is frozen until both bytes are read.
    pit_cmd(&mut pit, 0x00);
    let latched_at = pit.count(0);
    clock.advance(100 * tick);
    let latched = read_count(&mut pit, 0x40);
    ensure!(latched == latched_at, "latched {latched}, count was {latched_at}");
    let live = read_count(&mut pit, 0x40);
    ensure!(live.abs_diff(latched_at.wrapping_sub(100)) <= 2, "live count {live}");
    // Read-back: status of channel 0 (mode 2, lobyte/hibyte, OUT high).
    pit_cmd(&mut pit, 0xE2);
    let status = pit.read(0x40, 1);
    ensure!(status & 0x3F == 0x34 && status & 0x80 != 0, "status {status:#x}");
    // Mode 0, lobyte only: one edge at terminal count, then none.
    pit_cmd(&mut pit, 0x10);
    pit.write(0x40, 1, 200);
    let _ = pit.take_irq0_edge();
    clock.advance(199 * tick);
    ensure!(!pit.take_irq0_edge(), "mode 0 fired early");
    clock.advance(2 * tick);
    ensure!(pit.take_irq0_edge(), "mode 0 did not fire");
    clock.advance(100_000 * tick);
    ensure!(!pit.take_irq0_edge() && pit.next_irq0_edge().is_none(), "mode 0 fired twice");
    // Channel 2 as Linux calibrates with it: gate low, mode 0, count, gate high, OUT2.
    pit.write(0x61, 1, 0x00);
    pit_cmd(&mut pit, 0xB0);
    pit.write(0x42, 1, 0xFF);
    pit.write(0x42, 1, 0x00);
    clock.advance(10_000 * tick);
    ensure!(pit.read(0x61, 1) & 0x20 == 0, "OUT2 high with the gate low");
    pit.write(0x61, 1, 0x01);
    ensure!(pit.read(0x61, 1) & 0x21 == 0x01, "gate not read back / OUT2 high at once");
    clock.advance(254 * tick);
    ensure!(pit.read(0x61, 1) & 0x20 == 0, "OUT2 high before terminal count");
    clock.advance(2 * tick);
    ensure!(pit.read(0x61, 1) & 0x20 != 0, "OUT2 low after terminal count");
    // The refresh bit toggles.
    let r0 = pit.read(0x61, 1) & 0x10;
    clock.advance(18 * tick);
    ensure!(pit.read(0x61, 1) & 0x10 != r0, "refresh bit does not toggle");
    Ok(())
}

fn w(l: &mut Lapic, r: u64, v: u32) {
    l.mmio_write(r, 4, u64::from(v));
}

fn r(l: &mut Lapic, r: u64) -> u32 {
    l.mmio_read(r, 4) as u32
}

/// The register file, priorities, EOI, self-IPI, LINT0 ExtINT, and the timer.
pub fn lapic(_: &mut TestContext<'_>) -> TestResult {
    let clock = clock();
    let mut l = Lapic::new(clock.clone());
    ensure!(r(&mut l, reg::VERSION) == 0x0005_0014, "version {:#x}", r(&mut l, reg::VERSION));
    ensure!(r(&mut l, reg::SVR) == 0xFF && r(&mut l, reg::DFR) == u32::MAX, "reset SVR/DFR");
    ensure!(l.accepts_extint(), "reset LINT0 is not ExtINT");
    // Disabled: interrupts are refused and LVTs stay masked.
    l.accept(0x40);
    ensure!(l.deliverable().is_none(), "disabled APIC accepted a vector");
    w(&mut l, reg::LVT_TIMER, 0x40);
    ensure!(r(&mut l, reg::LVT_TIMER) & 1 << 16 != 0, "LVT unmasked while disabled");
    w(&mut l, reg::SVR, 0x1FF);
    w(&mut l, reg::LVT_LINT0, 0x700);
    ensure!(l.accepts_extint(), "LINT0 ExtINT");
    w(&mut l, reg::LVT_LINT0, 0x10700);
    ensure!(!l.accepts_extint(), "masked LINT0 passes ExtINT");
    // Registers that read back what was written (writable bits only).
    w(&mut l, reg::ID, 0xFFFF_FFFF);
    w(&mut l, reg::LDR, 0x0100_00FF);
    w(&mut l, reg::DFR, 0xF000_0000);
    ensure!(r(&mut l, reg::ID) == 0xFF00_0000, "ID {:#x}", r(&mut l, reg::ID));
    ensure!(r(&mut l, reg::LDR) == 0x0100_0000, "LDR {:#x}", r(&mut l, reg::LDR));
    ensure!(r(&mut l, reg::DFR) == u32::MAX, "DFR {:#x}", r(&mut l, reg::DFR));
    w(&mut l, reg::ID, 0);
    // Priorities: TPR 0x50 holds back 0x45, lets 0x61 through; ISR raises PPR.
    w(&mut l, reg::TPR, 0x50);
    l.accept(0x45);
    ensure!(l.deliverable().is_none(), "0x45 delivered above TPR 0x50");
    l.accept(0x61);
    ensure!(l.deliverable() == Some(0x61), "0x61 not deliverable");
    l.acknowledge(0x61);
    ensure!(r(&mut l, reg::PPR) == 0x60, "PPR {:#x} with 0x61 in service", r(&mut l, reg::PPR));
    ensure!(r(&mut l, reg::ISR + 0x30) == 1 << 1, "ISR word 3 {:#x}", r(&mut l, reg::ISR + 0x30));
    l.accept(0x62);
    ensure!(l.deliverable().is_none(), "same-class 0x62 nested");
    ensure!(r(&mut l, reg::IRR + 0x20) == 1 << 5, "IRR word 2 {:#x}", r(&mut l, reg::IRR + 0x20));
    ensure!(
        r(&mut l, reg::IRR + 0x30) == 1 << 2 && r(&mut l, reg::TMR + 0x30) == 0,
        "IRR/TMR word 3"
    );
    w(&mut l, reg::EOI, 0);
    ensure!(l.deliverable() == Some(0x62), "EOI did not let 0x62 through");
    l.acknowledge(0x62);
    w(&mut l, reg::EOI, 0);
    w(&mut l, reg::TPR, 0);
    ensure!(l.deliverable() == Some(0x45), "0x45 after TPR 0");
    l.acknowledge(0x45);
    w(&mut l, reg::EOI, 0);
    ensure!(l.counts.eoi == 3, "{} EOIs counted", l.counts.eoi);
    // Self-IPI by shorthand and by destination; an IPI to another CPU is dropped.
    w(&mut l, reg::ICR_LOW, 0x4_00F6);
    ensure!(l.deliverable() == Some(0xF6), "self-IPI");
    l.acknowledge(0xF6);
    w(&mut l, reg::EOI, 0);
    w(&mut l, reg::ICR_HIGH, 0x0300_0000);
    w(&mut l, reg::ICR_LOW, 0x00F5);
    ensure!(l.deliverable().is_none() && l.counts.ipi_dropped == 1, "IPI to APIC 3 arrived");
    // Vectors below 16 are illegal: ESR after the write that latches it.
    l.accept(3);
    w(&mut l, reg::ESR, 0);
    ensure!(r(&mut l, reg::ESR) == 1 << 6, "ESR {:#x}", r(&mut l, reg::ESR));
    // One-shot timer, divide by 16: 1 GHz / 16 = 62.5 MHz.
    let tick = crate::partition::platform::lapic::BUS_HZ; // per second
    let cycles_per_count = TSC_HZ * 16 / tick; // about 38 TSC cycles
    w(&mut l, reg::TDCR, 0x3);
    w(&mut l, reg::LVT_TIMER, 0x40);
    w(&mut l, reg::TMICT, 10_000);
    let t0 = clock.now();
    let d = l.next_deadline().ok_or("one-shot timer without deadline")?;
    let want = 10_000 * TSC_HZ * 16 / tick;
    ensure!(
        (d - t0).abs_diff(want) <= cycles_per_count + 1,
        "deadline {} cycles, want {want}",
        d - t0
    );
    clock.advance(want / 2);
    let c1 = r(&mut l, reg::TMCCT);
    clock.advance(want / 4);
    let c2 = r(&mut l, reg::TMCCT);
    ensure!(c1 > c2 && (4990..=5010).contains(&c1), "TMCCT {c1} then {c2}");
    l.update();
    ensure!(l.deliverable().is_none(), "timer fired early");
    clock.advance(want / 4 + 2 * cycles_per_count);
    l.update();
    ensure!(l.deliverable() == Some(0x40), "one-shot timer did not fire");
    ensure!(r(&mut l, reg::TMCCT) == 0 && l.next_deadline().is_none(), "one-shot timer still runs");
    l.acknowledge(0x40);
    w(&mut l, reg::EOI, 0);
    clock.advance(10 * want);
    l.update();
    ensure!(l.deliverable().is_none(), "one-shot timer fired twice");
    // Periodic, divide by 1: five periods unobserved are one interrupt; it reloads.
    w(&mut l, reg::TDCR, 0xB);
    w(&mut l, reg::LVT_TIMER, 0x2_0041);
    w(&mut l, reg::TMICT, 100_000);
    let period = 100_000 * TSC_HZ / tick;
    clock.advance(5 * period + period / 2);
    l.update();
    ensure!(l.deliverable() == Some(0x41), "periodic timer did not fire");
    let c = r(&mut l, reg::TMCCT);
    ensure!((49_000..=51_000).contains(&c), "periodic TMCCT {c} half-way into a period");
    l.acknowledge(0x41);
    w(&mut l, reg::EOI, 0);
    l.update();
    ensure!(l.deliverable().is_none(), "coalesced periods fired again");
    clock.advance(period);
    l.update();
    ensure!(l.deliverable() == Some(0x41), "periodic timer did not reload");
    l.acknowledge(0x41);
    w(&mut l, reg::EOI, 0);
    // Masked: the count runs, no interrupt.
    w(&mut l, reg::LVT_TIMER, 0x3_0041);
    clock.advance(3 * period);
    l.update();
    ensure!(l.deliverable().is_none(), "masked timer interrupted");
    // Byte reads see the register's bytes; odd writes are ignored.
    ensure!(
        l.mmio_read(reg::VERSION, 1) == 0x14 && l.mmio_read(reg::VERSION + 2, 1) == 5,
        "byte reads"
    );
    l.mmio_write(reg::TPR, 1, 0xFF);
    l.mmio_write(reg::TPR + 4, 4, 0xFF);
    ensure!(r(&mut l, reg::TPR) == 0, "a byte write reached TPR");
    // Software disable masks every LVT.
    w(&mut l, reg::SVR, 0xFF);
    let lvts = [
        reg::LVT_TIMER,
        reg::LVT_THERMAL,
        reg::LVT_PERF,
        reg::LVT_LINT0,
        reg::LVT_LINT1,
        reg::LVT_ERROR,
    ];
    ensure!(lvts.iter().all(|&v| r(&mut l, v) & 1 << 16 != 0), "LVTs unmasked after disable");
    Ok(())
}

/// The platform end to end by hand: PIT IRQ 0 -> PIC -> LINT0 ExtINT offered before the
/// APIC timer, each taken in turn; and random traffic to every port and register never
/// panics.
pub fn platform_and_hostile_input(_: &mut TestContext<'_>) -> TestResult {
    let clock = clock();
    let tick = TSC_HZ / PIT_HZ;
    let mut p = GuestPlatform::new(clock.clone());
    init_pic(&mut p.pic);
    p.write(0x21, 1, 0xFE);
    p.write(0x43, 1, 0x34);
    p.write(0x40, 2, 1193); // a 16-bit OUT reaches 0x40 and 0x41: low byte to channel 0 ...
    p.write(0x40, 1, 1193 >> 8); // ... so the high byte goes separately
    ensure!(p.offer().is_none(), "interrupt before any timer ran");
    p.lapic.mmio_write(reg::SVR, 4, 0x1FF);
    p.lapic.mmio_write(reg::LVT_TIMER, 4, 0x2_0040);
    p.lapic.mmio_write(reg::TDCR, 4, 0xB);
    p.lapic.mmio_write(reg::TMICT, 4, 1_000_000);
    let deadline = p.next_deadline().ok_or("no deadline")?;
    ensure!(deadline > clock.now(), "deadline in the past");
    clock.advance(2000 * tick);
    ensure!(p.offer() == Some(0x20), "PIT tick not offered first");
    p.taken();
    p.write(0x20, 1, 0x20);
    ensure!(p.offer() == Some(0x40), "APIC timer not offered");
    p.taken();
    ensure!(p.offer().is_none(), "APIC timer offered while in service");
    p.mmio_write(crate::partition::platform::APIC_BASE + reg::EOI, 4, 0);
    ensure!(p.stats.pic_taken == 1 && p.stats.lapic_taken == 1, "stats {:?}", p.stats);
    // A level-triggered line (ELCR) from a device outside the module, e.g. a UART.
    p.write(0x4D0, 1, 0x10);
    p.write(0x21, 1, 0xEE);
    p.set_irq(4, true);
    ensure!(p.offer() == Some(0x24), "level IRQ 4 not offered");
    p.taken();
    p.write(0x20, 1, 0x20);
    p.set_irq(4, false);
    ensure!(p.offer().is_none(), "IRQ 4 offered after it went low");
    // Hostile traffic: an LCG over every claimed port and every register offset.
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        x >> 16
    };
    let ports = [0x20u16, 0x21, 0xA0, 0xA1, 0x4D0, 0x4D1, 0x40, 0x41, 0x42, 0x43, 0x61];
    for _ in 0..200_000 {
        let v = next();
        let port = ports[(v % ports.len() as u64) as usize];
        let size = [1u8, 2, 4, 3, 0, 8][(v >> 8) as usize % 6];
        if v & 1 << 20 != 0 {
            p.write(port, size, (v >> 24) as u32);
        } else {
            let _ = p.read(port, size);
        }
        let off = (v >> 32) & 0xFFF;
        if v & 1 << 21 != 0 {
            p.mmio_write(crate::partition::platform::APIC_BASE + off, size, v);
        } else {
            let _ = p.mmio_read(crate::partition::platform::APIC_BASE + off, size);
        }
        clock.advance(v & 0xFFFF);
        if p.offer().is_some() && v & 1 << 22 != 0 {
            p.taken();
        }
        let _ = p.next_deadline();
    }
    Ok(())
}
