//! The 8259A pair (master at 0x20/0x21, slave at 0xA0/0xA1, cascaded on master IRQ 2)
//! and the edge/level control registers (ELCR, 0x4D0/0x4D1), as Linux's `i8259.c` drives
//! them: the probe (a mask written and read back), ICW1-4, OCW1 (IMR), OCW2
//! (non-specific, specific and rotating EOI, priority rotation), OCW3 (IRR/ISR read-back,
//! poll, special mask), auto-EOI, special fully nested mode. The output goes to the local
//! APIC's LINT0 (ExtINT); the vector comes from the interrupt acknowledge.
//!
//! Written from the 8259A data sheet, with QEMU's `hw/intc/i8259.c` and KVM's
//! `arch/x86/kvm/i8259.c` as references for the corner cases software relies on.

use super::PortDevice;

/// One 8259A.
#[derive(Debug, Clone, Copy, Default)]
struct Chip {
    /// Input level last seen per line (edge detection).
    last_irr: u8,
    irr: u8,
    imr: u8,
    isr: u8,
    /// Lowest-priority rotation: line `priority_add` has the highest priority.
    priority_add: u8,
    irq_base: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    /// 0: operational; 1-3: expecting ICW2-ICW4.
    init_state: u8,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    init4: bool,
    single: bool,
    /// Edge (0) or level (1) per line: the ELCR.
    elcr: u8,
    elcr_mask: u8,
}

impl Chip {
    fn new(elcr_mask: u8) -> Chip {
        Chip { elcr_mask, ..Chip::default() }
    }

    /// ICW1: back to the initial state (ELCR and the level lines' requests kept).
    fn init_reset(&mut self) {
        *self = Chip {
            irr: self.irr & self.elcr,
            elcr: self.elcr,
            elcr_mask: self.elcr_mask,
            ..Chip::default()
        };
    }

    fn set_irq(&mut self, line: u8, level: bool) {
        let mask = 1u8 << (line & 7);
        if self.elcr & mask != 0 {
            if level {
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
    }

    /// Priority (0 highest) of the highest-priority line set in `mask`; 8 for none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        (0..8).find(|p| mask & (1 << ((p + self.priority_add) & 7)) != 0).unwrap_or(8)
    }

    /// The line this chip would interrupt with, honouring masks and in-service lines.
    fn pending(&self, is_master: bool) -> Option<u8> {
        let priority = self.priority(self.irr & !self.imr);
        if priority == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_fully_nested && is_master {
            in_service &= !(1 << 2);
        }
        if self.special_mask {
            in_service &= !self.imr;
        }
        (priority < self.priority(in_service)).then_some((priority + self.priority_add) & 7)
    }

    /// INTA for `line`: in service (unless auto-EOI), request cleared for an edge line.
    fn acknowledge(&mut self, line: u8) {
        let mask = 1 << line;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (line + 1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        if self.elcr & mask == 0 {
            self.irr &= !mask;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1.
            self.init_reset();
            self.init_state = 1;
            self.init4 = value & 1 != 0;
            self.single = value & 2 != 0;
        } else if value & 0x08 != 0 {
            // OCW3.
            self.poll = value & 0x04 != 0;
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
            if value & 0x40 != 0 {
                self.special_mask = value & 0x20 != 0;
            }
        } else {
            // OCW2.
            let line = value & 7;
            match value >> 5 {
                0 | 4 => self.rotate_on_auto_eoi = value >> 7 != 0,
                1 | 5 => {
                    let p = self.priority(self.isr);
                    if p != 8 {
                        let l = (p + self.priority_add) & 7;
                        self.isr &= !(1 << l);
                        if value >> 5 == 5 {
                            self.priority_add = (l + 1) & 7;
                        }
                    }
                }
                3 => self.isr &= !(1 << line),
                6 => self.priority_add = (line + 1) & 7,
                7 => {
                    self.isr &= !(1 << line);
                    self.priority_add = (line + 1) & 7;
                }
                _ => {} // 2: no operation.
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.init_state {
            0 => self.imr = value,
            1 => {
                self.irq_base = value & 0xF8;
                self.init_state = match (self.single, self.init4) {
                    (false, _) => 2,
                    (true, true) => 3,
                    (true, false) => 0,
                };
            }
            2 => self.init_state = if self.init4 { 3 } else { 0 },
            _ => {
                self.special_fully_nested = value & 0x10 != 0;
                self.auto_eoi = value & 0x02 != 0;
                self.init_state = 0;
            }
        }
    }
}

/// The master/slave pair and its ELCR.
#[derive(Debug, Clone)]
pub struct Pic {
    chips: [Chip; 2],
}

impl Default for Pic {
    fn default() -> Self {
        Pic::new()
    }
}

impl Pic {
    /// Power-on state: nothing masked, nothing programmed (the guest sends ICW1-4).
    pub fn new() -> Pic {
        // IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge-triggered.
        Pic { chips: [Chip::new(0xF8), Chip::new(0xDE)] }
    }

    /// Drives ISA line `line` (0-15; others are ignored).
    pub fn set_irq(&mut self, line: u8, level: bool) {
        if line < 16 {
            self.chips[usize::from(line / 8)].set_irq(line % 8, level);
            self.cascade();
        }
    }

    /// The slave's output is the master's IRQ 2 input: while the slave requests, each
    /// update is an edge on it (the master's IRR bit 2 stays set until acknowledged).
    fn cascade(&mut self) {
        if self.chips[1].pending(false).is_some() {
            self.chips[0].set_irq(2, true);
            self.chips[0].set_irq(2, false);
        }
    }

    /// The master's INT output: an interrupt is requested.
    pub fn output(&self) -> bool {
        self.chips[0].pending(true).is_some()
    }

    /// The vector an acknowledge would return now (without acknowledging).
    pub fn peek_vector(&self) -> u8 {
        match self.chips[0].pending(true) {
            Some(2) => self.chips[1].irq_base + self.chips[1].pending(false).unwrap_or(7),
            Some(line) => self.chips[0].irq_base + line,
            None => self.chips[0].irq_base + 7,
        }
    }

    /// The interrupt acknowledge cycle: the vector, with the line put in service. With
    /// nothing pending it is the spurious IRQ 7 of the chip asked.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.chips[0].pending(true) {
            Some(2) => {
                self.chips[0].acknowledge(2);
                match self.chips[1].pending(false) {
                    Some(line) => {
                        self.chips[1].acknowledge(line);
                        self.chips[1].irq_base + line
                    }
                    None => self.chips[1].irq_base + 7,
                }
            }
            Some(line) => {
                self.chips[0].acknowledge(line);
                self.chips[0].irq_base + line
            }
            None => self.chips[0].irq_base + 7,
        };
        self.cascade();
        vector
    }

    /// OCW3 poll: the highest pending line of chip `c` (bit 7 set) acknowledged and
    /// retired at once, or 0 when none.
    fn poll(&mut self, c: usize) -> u8 {
        let Some(line) = self.chips[c].pending(c == 0) else {
            return 0;
        };
        let chip = &mut self.chips[c];
        chip.irr &= !(1 << line);
        chip.isr &= !(1 << line);
        if c == 1 {
            self.chips[0].irr &= !(1 << 2);
            self.chips[0].isr &= !(1 << 2);
        }
        self.cascade();
        0x80 | line
    }

    /// The ELCR of chip `c`.
    pub fn elcr(&self, c: usize) -> u8 {
        self.chips.get(c).map_or(0, |chip| chip.elcr)
    }

    /// Interrupt mask register of chip `c` (0 master, 1 slave).
    pub fn imr(&self, c: usize) -> u8 {
        self.chips.get(c).map_or(0xFF, |chip| chip.imr)
    }

    /// In-service register of chip `c`.
    pub fn isr(&self, c: usize) -> u8 {
        self.chips.get(c).map_or(0, |chip| chip.isr)
    }

    /// Interrupt request register of chip `c`.
    pub fn irr(&self, c: usize) -> u8 {
        self.chips.get(c).map_or(0, |chip| chip.irr)
    }
}

impl PortDevice for Pic {
    fn claims(&self, port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xA0 | 0xA1 | 0x4D0 | 0x4D1)
    }

    fn read(&mut self, port: u16, _size: u8) -> u32 {
        let c = usize::from(port & 0x80 != 0);
        let value = match port {
            0x4D0 | 0x4D1 => self.chips[usize::from(port & 1)].elcr,
            _ if self.chips[c].poll => {
                self.chips[c].poll = false;
                self.poll(c)
            }
            0x20 | 0xA0 if self.chips[c].read_isr => self.chips[c].isr,
            0x20 | 0xA0 => self.chips[c].irr,
            0x21 | 0xA1 => self.chips[c].imr,
            _ => 0xFF,
        };
        u32::from(value)
    }

    fn write(&mut self, port: u16, _size: u8, value: u32) {
        let value = value as u8;
        let c = usize::from(port & 0x80 != 0);
        match port {
            0x4D0 | 0x4D1 => {
                let chip = &mut self.chips[usize::from(port & 1)];
                chip.elcr = value & chip.elcr_mask;
            }
            0x20 | 0xA0 => self.chips[c].write_command(value),
            0x21 | 0xA1 => self.chips[c].write_data(value),
            _ => {}
        }
        self.cascade();
    }
}
