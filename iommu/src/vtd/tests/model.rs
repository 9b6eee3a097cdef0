//! A register-level model of a VT-d unit, written from the specification independently
//! of the driver's encoders, with QEMU's traps made loud: a 64-bit write to a 32-bit
//! register, or a wait descriptor with SW and IF both set, panics (QEMU aborts).

use std::cell::RefCell;
use std::rc::Rc;

use super::memory::SharedMemory;
use crate::invalidate::DomainId;
use crate::platform::{Mmio, PhysAddr};
use crate::vtd::invalidation::{ContextInvalidation, IotlbInvalidation};

/// QEMU 7.2's default CAP (39-bit, 3-level, MAMV 18, PSI, one fault record at 0x220).
pub const QEMU_CAP: u64 = 0x00d2_008c_2226_0206;
/// QEMU's ECAP under TCG (QI, IR, PT, IRO = 0xF, not coherent).
pub const QEMU_ECAP: u64 = 0xf0_0f4a;

/// One invalidation the model performed, decoded from registers or descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inv {
    /// Context cache.
    Context(ContextInvalidation),
    /// IOTLB.
    Iotlb(IotlbInvalidation),
    /// Interrupt-entry-cache invalidation (type 4): all (`None`) or `2^mask` from index.
    InterruptEntries(Option<(u16, u8)>),
    /// Wait descriptor with status write.
    Wait {
        /// Where the status went.
        address: PhysAddr,
        /// What was written.
        data: u32,
    },
}

/// Things the model saw, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Root table pointer latched from RTADDR.
    SetRootTable(PhysAddr),
    /// GCMD.SFL: never expected from this driver.
    UnexpectedOneShot(u32),
    /// Interrupt remapping table pointer latched from IRTA (the whole register value).
    SetInterruptTable(u64),
    /// Interrupt remapping turned on / off (IRES follows IRE).
    InterruptRemapping(bool),
    /// Compatibility-format interrupts allowed / blocked (CFIS follows CFI).
    CompatibilityFormat(bool),
    /// Translation turned on / off.
    Translation(bool),
    /// Queued invalidation turned on / off.
    Queue(bool),
    /// Write buffer flushed.
    WriteBufferFlush,
    /// Invalidation through CCMD / IOTLB registers.
    Register(Inv),
    /// Invalidation consumed from the queue.
    Queued(Inv),
    /// A register invalidation refused (IAIG = 0).
    Refused,
    /// Fault event control written.
    FaultControl(u32),
    /// Protected memory regions turned on / off (PMEN.EPM).
    ProtectedRegions(bool),
}

/// Conditions the model never completes, to prove every poll is bounded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stuck {
    /// GSTS bits that never change in response to GCMD.
    pub gsts: u32,
    /// CCMD.ICC never clears.
    pub ccmd: bool,
    /// IOTLB.IVT never clears.
    pub iotlb: bool,
    /// The queue never advances (IQH stays, no status writes).
    pub queue: bool,
}

/// Descriptors firmware left queued: `pending` of them still ahead of IQH, one consumed
/// per IQH read (unless the queue is stuck).
#[derive(Debug, Clone, Copy, Default)]
pub struct FirmwareQueue {
    pub pending: u64,
    /// Descriptors lost because QIE was cleared with IQH != IQT.
    pub dropped: u64,
    /// Firmware's queue never advances (this driver's own queue still works).
    pub stuck: bool,
}

/// The modelled unit.
pub struct VtdModel {
    pub cap: u64,
    pub ecap: u64,
    pub gsts: u32,
    rtaddr: u64,
    /// The IRTA register.
    pub irta: u64,
    ccmd: u64,
    iva: u64,
    iotlb: u64,
    pub fsts: u32,
    pub fectl: u32,
    pub fedata: u32,
    pub feaddr: u32,
    pub feuaddr: u32,
    iqa: u64,
    pub iqh: u64,
    pub iqt: u64,
    /// Fault recording registers (lo, hi).
    pub records: Vec<(u64, u64)>,
    next_record: usize,
    /// How often SRTP was issued (each one flushes every cache on QEMU).
    pub srtp_count: u32,
    /// 64-bit writes to a fault record's high word (legal, but the driver uses 32-bit).
    pub record_wide_writes: u32,
    pub events: Vec<Event>,
    /// IQT writes (each hands a batch of descriptors to the unit).
    pub doorbells: u32,
    /// Raw descriptors consumed from the queue.
    pub descriptors: Vec<(u64, u64)>,
    pub stuck: Stuck,
    pub firmware: FirmwareQueue,
    /// PMEN (EPM bit 31, PRS bit 0); writable only with CAP.PLMR or CAP.PHMR.
    pub pmen: u32,
    /// PMEN.PRS never clears.
    pub pmen_stuck: bool,
    /// GSTS reads that still show the old status after a GCMD changed it (real units
    /// take time; QEMU answers at once).
    pub lag: u32,
    /// The status GSTS still shows, and for how many more reads.
    shown: Option<(u32, u32)>,
    mem: SharedMemory,
}

/// The test's handle on the model; the driver owns another clone.
#[derive(Clone)]
pub struct ModelMmio(pub Rc<RefCell<VtdModel>>);

fn field(v: u64, lo: u32, width: u32) -> u64 {
    (v >> lo) & ((1 << width) - 1)
}

const GSTS_TES: u32 = 1 << 31;
const GSTS_RTPS: u32 = 1 << 30;
const GSTS_WBFS: u32 = 1 << 27;
const GSTS_QIES: u32 = 1 << 26;

impl VtdModel {
    /// A unit with the given capabilities over `mem`.
    pub fn shared(cap: u64, ecap: u64, mem: SharedMemory) -> ModelMmio {
        let nfr = field(cap, 40, 8) as usize + 1;
        ModelMmio(Rc::new(RefCell::new(VtdModel {
            cap,
            ecap,
            gsts: 0,
            rtaddr: 0,
            irta: 0,
            ccmd: 0,
            iva: 0,
            iotlb: 0,
            fsts: 0,
            fectl: 1 << 31,
            fedata: 0,
            feaddr: 0,
            feuaddr: 0,
            iqa: 0,
            iqh: 0,
            iqt: 0,
            records: vec![(0, 0); nfr],
            next_record: 0,
            srtp_count: 0,
            record_wide_writes: 0,
            events: Vec::new(),
            doorbells: 0,
            descriptors: Vec::new(),
            stuck: Stuck::default(),
            firmware: FirmwareQueue::default(),
            pmen: 0,
            pmen_stuck: false,
            lag: 0,
            shown: None,
            mem,
        })))
    }

    /// Firmware's queue base, as firmware programmed IQA before enabling its queue.
    pub fn set_queue_base(&mut self, base: PhysAddr) {
        self.iqa = base;
    }

    fn fro(&self) -> usize {
        field(self.cap, 24, 10) as usize * 16
    }
    fn iro(&self) -> usize {
        field(self.ecap, 8, 10) as usize * 16
    }
    fn mamv(&self) -> u64 {
        field(self.cap, 48, 6)
    }
    fn record_at(&self, offset: usize) -> Option<(usize, usize)> {
        let fro = self.fro();
        let end = fro + 16 * self.records.len();
        (offset >= fro && offset < end).then(|| ((offset - fro) / 16, (offset - fro) % 16))
    }

    /// Records a primary fault in the next record, or sets PFO when that record is busy.
    pub fn inject_fault(&mut self, source: u16, address: u64, reason: u8, is_read: bool) {
        let i = self.next_record;
        if self.records[i].1 >> 63 != 0 {
            self.fsts |= 1;
            return;
        }
        let hi = (1u64 << 63)
            | (u64::from(is_read) << 62)
            | (u64::from(reason) << 32)
            | u64::from(source);
        self.records[i] = (address & !0xFFF, hi);
        self.next_record = (i + 1) % self.records.len();
    }

    fn fsts_value(&self) -> u32 {
        let pending = self.records.iter().position(|r| r.1 >> 63 != 0);
        let mut v = self.fsts & !(0xFF << 8) & !2;
        if let Some(i) = pending {
            v |= 2 | ((i as u32) << 8);
        }
        v
    }

    fn gcmd(&mut self, v: u32) {
        let before = self.gsts;
        self.gcmd_effect(v);
        if self.lag > 0 && self.gsts != before {
            // A command arriving while the previous change is still invisible: the unit
            // acts on the register value it is given, so a GCMD built from stale GSTS
            // undoes the previous change.
            self.shown = Some((self.shown.map_or(before, |(old, _)| old), self.lag));
        }
    }

    fn gsts_read(&mut self) -> u32 {
        match self.shown {
            Some((old, reads)) if reads > 0 => {
                self.shown = Some((old, reads - 1));
                old
            }
            _ => {
                self.shown = None;
                self.gsts
            }
        }
    }

    fn gcmd_effect(&mut self, v: u32) {
        let s = self.stuck.gsts;
        if (v & GSTS_TES != 0) != (self.gsts & GSTS_TES != 0) && s & GSTS_TES == 0 {
            self.gsts ^= GSTS_TES;
            self.events.push(Event::Translation(v & GSTS_TES != 0));
        }
        if v & (1 << 30) != 0 {
            self.srtp_count += 1;
            self.events.push(Event::SetRootTable(self.rtaddr & !0xFFF));
            if s & GSTS_RTPS == 0 {
                self.gsts |= GSTS_RTPS;
            }
        }
        if v & (1 << 29) != 0 {
            self.events.push(Event::UnexpectedOneShot(1 << 29));
        }
        if v & (1 << 24) != 0 {
            self.events.push(Event::SetInterruptTable(self.irta));
            if s & (1 << 24) == 0 {
                self.gsts |= 1 << 24;
            }
        }
        for (bit, event) in [
            (1u32 << 25, Event::InterruptRemapping as fn(bool) -> Event),
            (1 << 23, Event::CompatibilityFormat),
        ] {
            if (v & bit != 0) != (self.gsts & bit != 0) && s & bit == 0 {
                self.gsts ^= bit;
                self.events.push(event(v & bit != 0));
            }
        }
        if v & (1 << 27) != 0 {
            self.events.push(Event::WriteBufferFlush);
            if s & GSTS_WBFS != 0 {
                self.gsts |= GSTS_WBFS;
            }
        }
        if (v & GSTS_QIES != 0) != (self.gsts & GSTS_QIES != 0) && s & GSTS_QIES == 0 {
            if v & GSTS_QIES == 0 {
                self.firmware.dropped += self.firmware.pending;
                self.firmware.pending = 0;
            }
            self.gsts ^= GSTS_QIES;
            self.iqh = 0;
            self.events.push(Event::Queue(v & GSTS_QIES != 0));
        }
    }

    fn context_register(&mut self, v: u64) {
        if self.gsts & GSTS_QIES != 0 || self.stuck.ccmd {
            self.ccmd = v;
            return;
        }
        let did = field(v, 0, 16) as DomainId;
        let inv = match field(v, 61, 2) {
            1 => ContextInvalidation::Global,
            2 => ContextInvalidation::Domain(did),
            3 => ContextInvalidation::Device { domain: did, source: field(v, 16, 16) as u16 },
            _ => panic!("CCMD with CIRG = 0"),
        };
        self.events.push(Event::Register(Inv::Context(inv)));
        self.ccmd = (v & !(1 << 63) & !(3 << 59)) | (field(v, 61, 2) << 59);
    }

    fn iotlb_register(&mut self, v: u64) {
        if self.gsts & GSTS_QIES != 0 || self.stuck.iotlb {
            self.iotlb = v;
            return;
        }
        let did = field(v, 32, 16) as DomainId;
        let granularity = field(v, 60, 2);
        let inv = match granularity {
            1 => IotlbInvalidation::Global,
            2 => IotlbInvalidation::Domain(did),
            3 => {
                let mask = field(self.iva, 0, 6);
                if mask > self.mamv() {
                    self.events.push(Event::Refused);
                    self.iotlb = v & !(1 << 63) & !(3 << 57);
                    return;
                }
                IotlbInvalidation::Page {
                    domain: did,
                    address: self.iva & !0xFFF,
                    mask: mask as u32,
                }
            }
            _ => panic!("IOTLB register with IIRG = 0"),
        };
        self.events.push(Event::Register(Inv::Iotlb(inv)));
        self.iotlb = (v & !(1 << 63) & !(3 << 57)) | (granularity << 57);
    }

    /// Decodes one descriptor; `None` means it is malformed (reserved bits, bad type).
    fn decode(&self, lo: u64, hi: u64) -> Option<Inv> {
        match field(lo, 0, 4) {
            1 => {
                if hi != 0 || field(lo, 6, 10) != 0 || field(lo, 50, 14) != 0 {
                    return None;
                }
                let did = field(lo, 16, 16) as DomainId;
                Some(Inv::Context(match field(lo, 4, 2) {
                    1 => ContextInvalidation::Global,
                    2 => ContextInvalidation::Domain(did),
                    3 => ContextInvalidation::Device {
                        domain: did,
                        source: field(lo, 32, 16) as u16,
                    },
                    _ => return None,
                }))
            }
            2 => {
                if field(lo, 8, 8) != 0 || field(lo, 32, 32) != 0 || field(hi, 7, 5) != 0 {
                    return None;
                }
                let did = field(lo, 16, 16) as DomainId;
                Some(Inv::Iotlb(match field(lo, 4, 2) {
                    1 if hi == 0 => IotlbInvalidation::Global,
                    2 if hi == 0 => IotlbInvalidation::Domain(did),
                    3 if field(hi, 0, 6) <= self.mamv() => IotlbInvalidation::Page {
                        domain: did,
                        address: hi & !0xFFF,
                        mask: field(hi, 0, 6) as u32,
                    },
                    _ => return None,
                }))
            }
            4 => {
                if hi != 0 || field(lo, 5, 4) != 0 || field(lo, 12, 15) != 0 || lo >> 48 != 0 {
                    return None;
                }
                Some(Inv::InterruptEntries(
                    (lo & (1 << 4) != 0)
                        .then(|| (field(lo, 32, 16) as u16, field(lo, 27, 5) as u8)),
                ))
            }
            5 => {
                let (status_write, interrupt) = (lo & (1 << 5) != 0, lo & (1 << 4) != 0);
                assert!(
                    !(status_write && interrupt),
                    "QEMU 7.2 aborts on a wait descriptor with SW and IF"
                );
                if !status_write || field(lo, 7, 25) != 0 || hi & 3 != 0 {
                    return None;
                }
                Some(Inv::Wait { address: hi, data: (lo >> 32) as u32 })
            }
            _ => None,
        }
    }

    fn run_queue(&mut self) {
        // A set IQE (FSTS bit 4) halts the queue until software clears it.
        if self.gsts & GSTS_QIES == 0 || self.stuck.queue || self.fsts & (1 << 4) != 0 {
            return;
        }
        let base = self.iqa & !0xFFF;
        let bytes = 4096u64 << field(self.iqa, 0, 3);
        while self.iqh != self.iqt {
            let at = base + self.iqh;
            let (lo, hi) = {
                let m = self.mem.0.borrow();
                (m.read(at), m.read(at + 8))
            };
            let Some(inv) = self.decode(lo, hi) else {
                self.fsts |= 1 << 4;
                return;
            };
            self.descriptors.push((lo, hi));
            if let Inv::Wait { address, data } = inv {
                self.mem.0.borrow_mut().write32(address, data);
            }
            self.events.push(Event::Queued(inv));
            self.iqh = (self.iqh + 16) % bytes;
        }
    }

    /// The invalidations performed, in order, however they arrived.
    pub fn invalidations(&self) -> Vec<Inv> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Register(inv) | Event::Queued(inv) => Some(*inv),
                _ => None,
            })
            .collect()
    }
}

const REG32: &[usize] =
    &[0x00, 0x18, 0x1C, 0x34, 0x38, 0x3C, 0x40, 0x44, 0x64, 0x9C, 0xA0, 0xA4, 0xA8, 0xAC];

impl Mmio for ModelMmio {
    fn read32(&self, offset: usize) -> u32 {
        if offset == 0x1C {
            return self.0.borrow_mut().gsts_read();
        }
        let m = self.0.borrow();
        match offset {
            0x00 => 0x10,
            0x64 => m.pmen,
            0x34 => m.fsts_value(),
            0x38 => m.fectl,
            0x3C => m.fedata,
            0x40 => m.feaddr,
            0x44 => m.feuaddr,
            _ if offset % 8 == 4 => (self.read64(offset - 4) >> 32) as u32,
            _ => self.read64(offset) as u32,
        }
    }

    fn read64(&self, offset: usize) -> u64 {
        assert!(!REG32.contains(&offset), "64-bit read of 32-bit register {offset:#x}");
        if offset == 0x80 {
            let mut m = self.0.borrow_mut();
            if m.firmware.pending > 0 {
                // A set IQE halts firmware's queue at its head too.
                if !m.stuck.queue && !m.firmware.stuck && m.fsts & (1 << 4) == 0 {
                    m.firmware.pending -= 1;
                    if m.firmware.pending == 0 {
                        // Firmware's last descriptor done: the head has caught up.
                        m.iqh = m.iqt;
                    }
                }
                // Firmware's descriptors still sit between IQH and IQT.
                return m.iqt.wrapping_sub(16 * m.firmware.pending);
            }
        }
        let m = self.0.borrow();
        if let Some((i, half)) = m.record_at(offset) {
            return if half == 0 { m.records[i].0 } else { m.records[i].1 };
        }
        match offset {
            0x08 => m.cap,
            0x10 => m.ecap,
            0x20 => m.rtaddr,
            0x28 => m.ccmd,
            0x80 => m.iqh,
            0x88 => m.iqt,
            0x90 => m.iqa,
            0xB8 => m.irta,
            o if o == m.iro() => m.iva,
            o if o == m.iro() + 8 => m.iotlb,
            _ => panic!("64-bit read of unknown register {offset:#x}"),
        }
    }

    fn write32(&mut self, offset: usize, value: u32) {
        let mut m = self.0.borrow_mut();
        if let Some((i, half)) = m.record_at(offset) {
            assert_eq!(half, 12, "32-bit write inside fault record {i} at +{half}");
            if value & (1 << 31) != 0 {
                m.records[i].1 &= !(1 << 63);
            }
            return;
        }
        match offset {
            0x18 => m.gcmd(value),
            0x34 => m.fsts &= !(value & 0x7D),
            0x38 => {
                m.fectl = value & (1 << 31);
                m.events.push(Event::FaultControl(value));
            }
            0x64 => {
                assert!(m.cap & (3 << 5) != 0, "PMEN written on a unit without PLMR/PHMR");
                let on = value & (1 << 31) != 0;
                m.events.push(Event::ProtectedRegions(on));
                m.pmen = if on || m.pmen_stuck { ((1 << 31) * u32::from(on)) | 1 } else { 0 };
            }
            0x3C => m.fedata = value,
            0x40 => m.feaddr = value,
            0x44 => m.feuaddr = value,
            _ => panic!("unexpected 32-bit write to {offset:#x}"),
        }
    }

    fn write64(&mut self, offset: usize, value: u64) {
        assert!(
            !REG32.contains(&offset) && offset.is_multiple_of(8),
            "QEMU aborts: 64-bit write to 32-bit register {offset:#x}"
        );
        let mut m = self.0.borrow_mut();
        if let Some((i, half)) = m.record_at(offset) {
            assert_eq!(half, 8, "64-bit write to fault record {i} low word");
            m.record_wide_writes += 1;
            if value & (1 << 63) != 0 {
                m.records[i].1 &= !(1 << 63);
            }
            return;
        }
        match offset {
            0x20 => m.rtaddr = value,
            0x28 => m.context_register(value),
            0x88 => {
                m.iqt = value;
                m.doorbells += 1;
                // Firmware's descriptors are modelled by count (they drain through IQH
                // reads), not read from memory.
                if m.firmware.pending == 0 {
                    m.run_queue();
                }
            }
            0x90 => {
                // The specification forbids changing IQA while the queue is enabled.
                assert!(m.gsts & GSTS_QIES == 0, "IQA written while QIES is set");
                m.iqa = value
            }
            0xB8 => m.irta = value,
            o if o == m.iro() => m.iva = value,
            o if o == m.iro() + 8 => m.iotlb_register(value),
            _ => panic!("unexpected 64-bit write to {offset:#x}"),
        }
    }
}
