//! The guest platform a partition may be given (`platform pc` in its configuration): the
//! interrupt controllers and timers a PC operating system insists on, each the smallest
//! that Linux is content with. An 8259 pair with ELCR ([`pic`]), an 8254 with the port-0x61
//! gate ([`pit`]) and an xAPIC local APIC whose MMIO page is trapped through the nested
//! tables and emulated by decoding the guest's instruction ([`lapic`], [`decode`],
//! [`walk`]). A Linux guest also gets a 16550 UART at 0x3F8 ([`uart`]) and PCI
//! configuration space ([`pci`]); what no device claims reads all ones and drops writes,
//! as on a PC with nothing at that port (see docs/linux-guest.md).
//!
//! Every device is a state machine over guest accesses and time; time comes from a
//! [`Clock`] the devices read (the host TSC, or a hand-driven clock in tests), never from
//! a parameter. [`GuestPlatform`] owns the devices and answers the two questions the run
//! loop asks: which vector to inject next, and the TSC deadline of the next timer event.

pub mod decode;
pub mod delivery;
pub mod lapic;
pub mod msix;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod uart;
pub mod walk;

use super::memory::GuestMemory;
use super::vcpu::{Reg, VcpuBackend};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use decode::{DecodeError, Operation};

/// A device behind I/O ports. Accesses come from the guest (any port, any size, any
/// value): a device must answer every one without panicking.
pub trait PortDevice {
    /// Whether this device answers `port`.
    fn claims(&self, port: u16) -> bool;
    /// An IN of `size` bytes (1, 2, 4) from `port`.
    fn read(&mut self, port: u16, size: u8) -> u32;
    /// An OUT of `size` bytes of `value` to `port`.
    fn write(&mut self, port: u16, size: u8, value: u32);
}

/// Guest time: the host TSC (the guest reads the same TSC, offset 0), or a counter tests
/// move by hand. Cloning shares the clock.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Arc<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    hz: u64,
    /// `Some` for a hand-driven clock.
    manual: Option<AtomicU64>,
}

impl Clock {
    /// The host TSC, running at `hz` (nonzero: see [`PlatformError::NoTscRate`]).
    pub fn tsc(hz: u64) -> Clock {
        Clock { inner: Arc::new(ClockInner { hz: hz.max(1), manual: None }) }
    }

    /// A clock at `hz` that only moves when [`Clock::advance`] moves it (tests).
    pub fn manual(hz: u64, start: u64) -> Clock {
        Clock { inner: Arc::new(ClockInner { hz: hz.max(1), manual: Some(AtomicU64::new(start)) }) }
    }

    /// Now, in TSC cycles.
    pub fn now(&self) -> u64 {
        match &self.inner.manual {
            Some(t) => t.load(Ordering::Relaxed),
            None => super::cycles(),
        }
    }

    /// Moves a manual clock forward (no effect on the TSC clock).
    pub fn advance(&self, cycles: u64) {
        if let Some(t) = &self.inner.manual {
            t.fetch_add(cycles, Ordering::Relaxed);
        }
    }

    /// TSC cycles per second.
    pub fn hz(&self) -> u64 {
        self.inner.hz
    }

    /// `cycles` of the TSC as ticks of a clock at `hz` (rounded down).
    pub fn ticks_of(&self, cycles: u64, hz: u64) -> u64 {
        (u128::from(cycles) * u128::from(hz) / u128::from(self.inner.hz)).min(u64::MAX as u128)
            as u64
    }

    /// TSC cycles until `ticks` of a clock at `hz` have passed (rounded up).
    pub fn cycles_of(&self, ticks: u64, hz: u64) -> u64 {
        let hz = u128::from(hz.max(1));
        ((u128::from(ticks) * u128::from(self.inner.hz)).div_ceil(hz)).min(u64::MAX as u128) as u64
    }
}

/// Why a partition could not be given the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformError {
    /// The host's TSC rate is unknown (no PIT to measure it), so no guest timer can be
    /// driven from it.
    NoTscRate,
}

impl core::fmt::Display for PlatformError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlatformError::NoTscRate => {
                f.write_str("the host's TSC rate is unknown, so guest timers cannot run")
            }
        }
    }
}

/// Where an offered interrupt comes from (what taking it acknowledges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The 8259 pair through LINT0 in ExtINT mode: taking it is the PIC's INTA cycle.
    Pic,
    /// The local APIC's IRR: taking it moves the vector to the ISR.
    Lapic,
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlatformStats {
    /// Vectors the guest took from the PIC (ExtINT).
    pub pic_taken: u64,
    /// Vectors the guest took from the local APIC.
    pub lapic_taken: u64,
    /// PIT channel-0 output edges seen (IRQ0 raised).
    pub pit_edges: u64,
    /// Guest MMIO accesses to the local APIC page.
    pub mmio: u64,
    /// Port accesses served.
    pub ports: u64,
}

/// A partition's PC platform: PIC pair, PIT, local APIC, and the interrupt it offered.
#[derive(Debug)]
pub struct GuestPlatform {
    /// The 8259 pair (and ELCR).
    pub pic: pic::Pic,
    /// The 8254 (and port 0x61).
    pub pit: pit::Pit,
    /// The local APIC.
    pub lapic: lapic::Lapic,
    clock: Clock,
    offered: Option<(u8, Source)>,
    /// What happened so far.
    pub stats: PlatformStats,
}

/// Guest-physical base of the local APIC's MMIO page (the architectural default; the
/// APIC base MSR reports it and relocation is not supported).
pub const APIC_BASE: u64 = 0xFEE0_0000;

impl GuestPlatform {
    /// A platform in its power-on state, timed by `clock`.
    pub fn new(clock: Clock) -> GuestPlatform {
        GuestPlatform {
            pic: pic::Pic::new(),
            pit: pit::Pit::new(clock.clone()),
            lapic: lapic::Lapic::new(clock.clone()),
            clock,
            offered: None,
            stats: PlatformStats::default(),
        }
    }

    /// A platform on the host TSC; refused when its rate is unknown.
    pub fn on_host() -> Result<GuestPlatform, PlatformError> {
        match crate::console::tsc_hz() {
            0 => Err(PlatformError::NoTscRate),
            hz => Ok(GuestPlatform::new(Clock::tsc(hz))),
        }
    }

    /// The platform's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Brings the timers up to now: a PIT channel-0 edge raises IRQ0 on the PIC, an
    /// expired local APIC timer sets its vector in the IRR. Ticks that passed while an
    /// earlier one was still pending are merged into it (as on hardware).
    pub fn update(&mut self) {
        if self.pit.take_irq0_edge() {
            self.stats.pit_edges += 1;
            self.pic.set_irq(0, true);
            self.pic.set_irq(0, false);
        }
        self.lapic.update();
    }

    /// Drives ISA interrupt line `line` (0-15) to `level` (for devices outside this
    /// module, such as a UART on IRQ 4).
    pub fn set_irq(&mut self, line: u8, level: bool) {
        self.pic.set_irq(line, level);
    }

    /// A device's MSI (fixed delivery) with `vector`, into the local APIC's IRR.
    pub fn deliver_msi(&mut self, vector: u8) {
        self.lapic.accept(vector);
    }

    /// The vector to offer the guest now, remembered until [`GuestPlatform::taken`] or
    /// the next call: the PIC's when LINT0 passes ExtINT and the PIC asks (ExtINT is not
    /// subject to the APIC's priority), else the local APIC's highest IRR vector above
    /// the processor priority. `None` when nothing is deliverable.
    pub fn offer(&mut self) -> Option<u8> {
        self.update();
        self.offered = if self.lapic.accepts_extint() && self.pic.output() {
            Some((self.pic.peek_vector(), Source::Pic))
        } else {
            self.lapic.deliverable().map(|v| (v, Source::Lapic))
        };
        self.offered.map(|(v, _)| v)
    }

    /// The guest took the offered vector: the PIC's interrupt acknowledge, or IRR -> ISR
    /// in the local APIC. No effect when nothing was offered.
    pub fn taken(&mut self) {
        match self.offered.take() {
            Some((_, Source::Pic)) => {
                self.pic.acknowledge();
                self.stats.pic_taken += 1;
            }
            Some((v, Source::Lapic)) => {
                self.lapic.acknowledge(v);
                self.stats.lapic_taken += 1;
            }
            None => {}
        }
    }

    /// Whether an interrupt is deliverable now (a halted guest with IF = 1 wakes).
    pub fn interrupt_ready(&mut self) -> bool {
        let ready = self.offer().is_some();
        self.offered = None;
        ready
    }

    /// TSC of the next timer event (PIT channel-0 edge or local APIC timer expiry),
    /// `None` when no timer runs.
    pub fn next_deadline(&self) -> Option<u64> {
        match (self.pit.next_irq0_edge(), self.lapic.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether a guest-physical address is the local APIC's page.
    pub fn claims_mmio(&self, gpa: u64) -> bool {
        (APIC_BASE..APIC_BASE + 0x1000).contains(&gpa)
    }

    /// A guest read of `size` bytes at `gpa` in the local APIC's page.
    pub fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        self.stats.mmio += 1;
        self.lapic.mmio_read(gpa.wrapping_sub(APIC_BASE) & 0xFFF, size)
    }

    /// A guest write of `size` bytes of `value` at `gpa` in the local APIC's page.
    pub fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) {
        self.stats.mmio += 1;
        self.lapic.mmio_write(gpa.wrapping_sub(APIC_BASE) & 0xFFF, size, value);
    }

    /// Emulates the guest instruction whose access to `gpa` (in the local APIC's page)
    /// faulted in the nested tables ([`emulate_access`] on the local APIC).
    pub fn emulate_mmio(
        &mut self,
        vcpu: &mut dyn VcpuBackend,
        mem: &GuestMemory,
        gpa: u64,
        error_code: u64,
    ) -> Result<(), DecodeError> {
        emulate_access(self, vcpu, mem, gpa, error_code)
    }

    fn byte_device(&mut self, port: u16) -> Option<&mut dyn PortDevice> {
        if self.pic.claims(port) {
            Some(&mut self.pic)
        } else if self.pit.claims(port) {
            Some(&mut self.pit)
        } else {
            None
        }
    }
}

/// The platform's ports are byte-wide (ISA): a wider access reaches consecutive ports,
/// low byte first, as the bus splits it; bytes no device answers read as all ones.
impl PortDevice for GuestPlatform {
    fn claims(&self, port: u16) -> bool {
        self.pic.claims(port) || self.pit.claims(port)
    }

    fn read(&mut self, port: u16, size: u8) -> u32 {
        self.stats.ports += 1;
        let mut value = 0u32;
        for i in 0..u16::from(size.clamp(1, 4)) {
            let p = port.wrapping_add(i);
            let byte = self.byte_device(p).map_or(0xFF, |d| d.read(p, 1) & 0xFF);
            value |= byte << (8 * i);
        }
        value
    }

    fn write(&mut self, port: u16, size: u8, value: u32) {
        self.stats.ports += 1;
        for i in 0..u16::from(size.clamp(1, 4)) {
            let p = port.wrapping_add(i);
            if let Some(d) = self.byte_device(p) {
                d.write(p, 1, (value >> (8 * i)) & 0xFF);
            }
        }
    }
}

/// A device behind trapped guest-physical pages (the local APIC's, an MSI-X table's).
pub trait MmioDevice {
    /// A guest read of `size` bytes at `gpa`.
    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64;
    /// A guest write of `size` bytes of `value` at `gpa`.
    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64);
}

impl MmioDevice for GuestPlatform {
    fn mmio_read(&mut self, gpa: u64, size: u8) -> u64 {
        GuestPlatform::mmio_read(self, gpa, size)
    }

    fn mmio_write(&mut self, gpa: u64, size: u8, value: u64) {
        GuestPlatform::mmio_write(self, gpa, size, value)
    }
}

/// Emulates the guest instruction whose access to `gpa` (in a page of `dev`'s) faulted
/// in the nested tables: fetches it at the guest's RIP through the guest's page tables,
/// decodes it ([`decode`]), performs the access on `dev`, writes the register result and
/// moves RIP past it. Anything it cannot decode is refused with the decoder's error and
/// changes nothing.
pub fn emulate_access(
    dev: &mut dyn MmioDevice,
    vcpu: &mut dyn VcpuBackend,
    mem: &GuestMemory,
    gpa: u64,
    error_code: u64,
) -> Result<(), DecodeError> {
    let ctl = vcpu.control();
    if ctl.delivering_event {
        return Err(DecodeError::EventDelivery);
    }
    if !ctl.code64 {
        return Err(DecodeError::NotLongMode);
    }
    // Nested page fault error code bit 4: the access was an instruction fetch.
    if error_code & 1 << 4 != 0 {
        return Err(DecodeError::Execute);
    }
    let rip = vcpu.reg(Reg::Rip);
    let mut bytes = [0u8; decode::MAX_LEN];
    let n = walk::fetch(mem, &ctl, rip, &mut bytes)?;
    let insn = decode::decode(&bytes[..n])?;
    // Nested page fault error code bit 1: the access was a write.
    let writes = !matches!(insn.op, Operation::Load(_) | Operation::LoadExtend { .. });
    if writes != (error_code & 1 << 1 != 0) {
        return Err(DecodeError::DirectionMismatch);
    }
    let size = insn.size;
    match insn.op {
        Operation::Load(r) => {
            let v = dev.mmio_read(gpa, size);
            let old = vcpu.gpr(r.index);
            vcpu.set_gpr(r.index, r.merge(old, v, size));
        }
        Operation::Store(r) => {
            let v = r.extract(vcpu.gpr(r.index), size);
            dev.mmio_write(gpa, size, v);
        }
        Operation::StoreImm(v) => dev.mmio_write(gpa, size, v & decode::mask(size)),
        Operation::LoadExtend { reg, dest, signed } => {
            let v = dev.mmio_read(gpa, size);
            let v = match (signed, size) {
                (true, 1) => v as u8 as i8 as i64 as u64,
                (true, _) => v as u16 as i16 as i64 as u64,
                (false, _) => v,
            };
            let old = vcpu.gpr(reg.index);
            vcpu.set_gpr(reg.index, reg.merge(old, v & decode::mask(dest), dest));
        }
        Operation::Exchange(r) => {
            let old = dev.mmio_read(gpa, size);
            let reg = vcpu.gpr(r.index);
            dev.mmio_write(gpa, size, r.extract(reg, size));
            vcpu.set_gpr(r.index, r.merge(reg, old, size));
        }
    }
    vcpu.set_rip(rip.wrapping_add(u64::from(insn.len)));
    Ok(())
}
