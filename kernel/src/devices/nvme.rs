//! A small NVM Express controller driver for the hypervisor's own use (class 01:08:02):
//! quiesce a controller a partition lets go (normal shutdown, then disable), and, for the
//! tests, enable it with an admin queue pair at IOVAs the caller's IOMMU domain maps,
//! send Identify Controller with a PRP and read the completion, so that where the
//! controller's DMA lands can be proven with data. The owner's driver (Linux's `nvme`)
//! does everything else; this one creates no I/O queues and takes no interrupts.
//!
//! The register, submission-entry and completion-entry layouts (NVMe base specification
//! 2.0, 3.1.4 and 4.2-4.6) are declared once below as [`Field`]s. Every wait is bounded by
//! a time the controller states (CAP.TO for CSTS.RDY) or by [`SHUTDOWN_MS`] /
//! [`COMMAND_MS`], and a controller that reads as all ones is reported as not responding
//! instead of being waited for.
#![deny(unsafe_code)]

use crate::mem::KernelMemory;
use crate::mmio::{MmioError, MmioWindow};
use crate::pci::PciFunction;
use alloc::string::String;
use core::fmt;
use iommu::bits::Field;
use iommu::platform::PhysMemory;

/// PCI class, subclass and programming interface of an NVM Express I/O controller.
pub const CLASS: (u8, u8, u8) = (0x01, 0x08, 0x02);

/// Controller registers (byte offsets in BAR0).
const REG_CAP: usize = 0x00;
const REG_VS: usize = 0x08;
const REG_CC: usize = 0x14;
const REG_CSTS: usize = 0x1C;
const REG_AQA: usize = 0x24;
const REG_ASQ: usize = 0x28;
const REG_ACQ: usize = 0x30;
/// The first doorbell (admin submission queue tail); the others follow CAP.DSTRD apart.
const DOORBELLS: usize = 0x1000;
/// At most this much of BAR0 is mapped (registers and the admin doorbells).
const MAX_WINDOW: u64 = 1 << 20;

/// CAP: maximum queue entries supported, 0's based.
const CAP_MQES: Field = Field::new(0, 16);
/// CAP: worst-case time for CSTS.RDY to follow CC.EN, in 500 ms units.
const CAP_TO: Field = Field::new(24, 8);
/// CAP: doorbell stride, 4 << DSTRD bytes.
const CAP_DSTRD: Field = Field::new(32, 4);
/// CAP: NVM subsystem reset supported.
const CAP_NSSRS: Field = Field::bit(36);
/// CAP: command sets supported, bit 0 of CSS (bit 37): the NVM command set.
const CAP_CSS_NVM: Field = Field::bit(37);
/// CAP: minimum and maximum memory page size, 4 KiB << n.
const CAP_MPSMIN: Field = Field::new(48, 4);
const CAP_MPSMAX: Field = Field::new(52, 4);

/// CC: enable.
const CC_EN: Field = Field::bit(0);
/// CC: I/O command set selected (0: NVM), memory page size (4 KiB << n), arbitration.
const CC_CSS: Field = Field::new(4, 3);
const CC_MPS: Field = Field::new(7, 4);
const CC_AMS: Field = Field::new(11, 3);
/// CC: shutdown notification (01b normal, 10b abrupt).
const CC_SHN: Field = Field::new(14, 2);
/// CC: I/O submission and completion queue entry sizes, 2^n bytes.
const CC_IOSQES: Field = Field::new(16, 4);
const CC_IOCQES: Field = Field::new(20, 4);
const SHN_NORMAL: u64 = 0b01;

/// CSTS: ready, controller fatal status, shutdown status (10b: complete).
const CSTS_RDY: Field = Field::bit(0);
const CSTS_CFS: Field = Field::bit(1);
const CSTS_SHST: Field = Field::new(2, 2);
const SHST_COMPLETE: u64 = 0b10;

/// AQA: admin submission and completion queue sizes, 0's based.
const AQA_ASQS: Field = Field::new(0, 12);
const AQA_ACQS: Field = Field::new(16, 12);

/// Submission queue entry, qword 0: CDW0 (opcode, command id) and the namespace id.
const SQE_OPCODE: Field = Field::new(0, 8);
const SQE_CID: Field = Field::new(16, 16);
const SQE_NSID: Field = Field::new(32, 32);
/// Qword 3 is PRP entry 1, qword 4 PRP entry 2; qword 5 holds CDW10 (Identify: CNS).
const SQE_PRP1_QWORD: usize = 3;
const SQE_CDW10_QWORD: usize = 5;
const SQE_CNS: Field = Field::new(0, 8);
/// Completion queue entry, qword 1 (DW2, DW3): SQ head, command id, phase, status.
const CQE_SQHD: Field = Field::new(0, 16);
const CQE_CID: Field = Field::new(32, 16);
const CQE_PHASE: Field = Field::bit(48);
const CQE_SC: Field = Field::new(49, 8);
const CQE_SCT: Field = Field::new(57, 3);
const CQE_DNR: Field = Field::bit(63);

const SQE_BYTES: u64 = 64;
const CQE_BYTES: u64 = 16;
/// log2 of the entry sizes CC announces for I/O queues (the specification's only sizes).
const IOSQES: u64 = 6;
const IOCQES: u64 = 4;
const OPC_IDENTIFY: u64 = 0x06;
const CNS_CONTROLLER: u64 = 0x01;
/// Bytes of an Identify data structure (one 4 KiB page, so PRP entry 1 alone).
pub const IDENTIFY_BYTES: u64 = 4096;
/// Entries in an admin queue this driver sets up, at most (one 4 KiB page of SQEs).
pub const MAX_ADMIN_ENTRIES: u16 = 64;

/// How long a normal shutdown may take: Linux's default (`nvme_core.shutdown_timeout`,
/// 5 s; a controller's RTD3E would need an Identify first, which a quiesce cannot rely on).
pub const SHUTDOWN_MS: u64 = 5_000;
/// How long one admin command may take.
pub const COMMAND_MS: u64 = 2_000;

/// Status code type 0 (generic), status code 04h: Data Transfer Error.
pub const DATA_TRANSFER_ERROR: (u8, u8) = (0, 0x04);

/// Why the driver could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmeError {
    /// The function is not an NVMe controller (class, subclass, interface).
    NotNvme((u8, u8, u8)),
    /// It has no memory BAR0.
    NoMemoryBar,
    /// BAR0 is too small for the registers and the admin doorbells.
    BarTooSmall(u64),
    /// BAR0 could not be mapped.
    Map(MmioError),
    /// Its registers read as all ones: the device is gone or not decoding.
    NotResponding,
    /// A status the driver waited for did not come within the bound.
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// The bound, in milliseconds (at least; one timer tick per millisecond).
        ms: u64,
        /// CSTS when the wait gave up.
        csts: u32,
    },
    /// CSTS.CFS: the controller reports a fatal error.
    Fatal(u32),
    /// `enable` on a controller that is enabled or still ready.
    NotDisabled(u32),
    /// The controller lacks something this driver needs.
    Unsupported(&'static str),
    /// A queue or buffer the caller gave is unusable (size, alignment).
    BadArgument(&'static str),
    /// A completion arrived for another command.
    WrongCompletion {
        /// The command id submitted.
        expected: u16,
        /// The one completed.
        got: u16,
    },
}

impl fmt::Display for NvmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NvmeError::NotNvme((c, s, p)) => {
                write!(f, "class {c:02x}{s:02x}{p:02x} is not an NVMe controller")
            }
            NvmeError::NoMemoryBar => f.write_str("no memory BAR0"),
            NvmeError::BarTooSmall(size) => write!(f, "BAR0 of {size:#x} bytes is too small"),
            NvmeError::Map(e) => write!(f, "BAR0: {e}"),
            NvmeError::NotResponding => f.write_str("its registers read as all ones"),
            NvmeError::Timeout { what, ms, csts } => {
                write!(f, "timed out after {ms} ms waiting for {what} (CSTS {csts:#x})")
            }
            NvmeError::Fatal(csts) => write!(f, "controller fatal status (CSTS {csts:#x})"),
            NvmeError::NotDisabled(csts) => {
                write!(f, "the controller is not disabled (CSTS {csts:#x})")
            }
            NvmeError::Unsupported(what) => write!(f, "the controller does not offer {what}"),
            NvmeError::BadArgument(what) => f.write_str(what),
            NvmeError::WrongCompletion { expected, got } => {
                write!(f, "completion for command {got}, expected {expected}")
            }
        }
    }
}

/// An admin queue pair in memory the caller owns: host-physical addresses for the CPU,
/// IOVAs for the controller (the same 4 KiB pages, mapped by the caller's IOMMU domain).
#[derive(Debug)]
pub struct AdminQueues {
    sq_phys: u64,
    sq_iova: u64,
    cq_phys: u64,
    cq_iova: u64,
    entries: u16,
    tail: u16,
    head: u16,
    phase: bool,
    next_cid: u16,
}

impl AdminQueues {
    /// The pair at the given pages (4 KiB aligned, nonzero IOVAs) with `entries` slots
    /// each (2..=[`MAX_ADMIN_ENTRIES`]).
    pub fn new(sq: (u64, u64), cq: (u64, u64), entries: u16) -> Result<AdminQueues, NvmeError> {
        let aligned = |a: u64| a != 0 && a & 0xFFF == 0;
        if ![sq.0, sq.1, cq.0, cq.1].into_iter().all(aligned) {
            return Err(NvmeError::BadArgument("queue pages must be 4 KiB aligned and nonzero"));
        }
        if !(2..=MAX_ADMIN_ENTRIES).contains(&entries) {
            return Err(NvmeError::BadArgument("admin queues take 2 to 64 entries"));
        }
        Ok(AdminQueues {
            sq_phys: sq.0,
            sq_iova: sq.1,
            cq_phys: cq.0,
            cq_iova: cq.1,
            entries,
            tail: 0,
            head: 0,
            phase: true,
            next_cid: 1,
        })
    }

    /// Empties both queues (a new controller enable starts them at slot 0, phase 1).
    fn reset(&mut self) {
        let mut mem = KernelMemory;
        for i in 0..u64::from(self.entries) * CQE_BYTES / 8 {
            mem.write_u64(self.cq_phys + 8 * i, 0);
        }
        (self.tail, self.head, self.phase) = (0, 0, true);
    }
}

/// One completion queue entry, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// The command it completes.
    pub cid: u16,
    /// Status code type and status code.
    pub status: (u8, u8),
    /// Do Not Retry.
    pub dnr: bool,
    /// The submission queue head the controller reports.
    pub sq_head: u16,
}

impl Completion {
    /// Whether the command succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == (0, 0)
    }
}

/// The Identify Controller fields the tests compare with the QEMU properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyController {
    /// PCI vendor id (bytes 1:0).
    pub vendor: u16,
    /// Serial number (bytes 23:4), ASCII, trailing spaces cut.
    pub serial: String,
    /// Model number (bytes 63:24).
    pub model: String,
    /// Firmware revision (bytes 71:64).
    pub firmware: String,
}

impl IdentifyController {
    /// Decodes the first 72 bytes of an Identify Controller structure; a byte that is not
    /// printable ASCII shows as `?` (it is device data).
    pub fn parse(data: &[u8]) -> Option<IdentifyController> {
        let text = |r: core::ops::Range<usize>| -> Option<String> {
            let s: String = data
                .get(r)?
                .iter()
                .map(|&b| if (0x20..0x7F).contains(&b) { b as char } else { '?' })
                .collect();
            Some(String::from(s.trim_end_matches(' ')))
        };
        Some(IdentifyController {
            vendor: u16::from_le_bytes([*data.first()?, *data.get(1)?]),
            serial: text(4..24)?,
            model: text(24..64)?,
            firmware: text(64..72)?,
        })
    }
}

/// One NVMe controller with BAR0 mapped.
pub struct Controller {
    regs: MmioWindow,
    cap: u64,
}

impl Controller {
    /// Maps `f`'s registers (memory decoding must be on) and reads CAP.
    pub fn open(f: &PciFunction) -> Result<Controller, NvmeError> {
        if f.class != CLASS {
            return Err(NvmeError::NotNvme(f.class));
        }
        let (base, size) = f.memory_bar(0).ok_or(NvmeError::NoMemoryBar)?;
        let len = size.min(MAX_WINDOW);
        let regs = MmioWindow::map(base, len as usize).map_err(NvmeError::Map)?;
        let cap = regs.read64(REG_CAP);
        if cap == u64::MAX {
            return Err(NvmeError::NotResponding);
        }
        let c = Controller { regs, cap };
        if c.doorbell(1) as u64 + 4 > len {
            return Err(NvmeError::BarTooSmall(size));
        }
        Ok(c)
    }

    /// Doorbell `index` (2y: submission queue y's tail, 2y + 1: completion queue y's head).
    fn doorbell(&self, index: usize) -> usize {
        DOORBELLS + index * (4usize << CAP_DSTRD.get(self.cap))
    }

    /// CC, CSTS and VS as they read now.
    pub fn cc(&self) -> u32 {
        self.regs.read32(REG_CC)
    }

    /// See [`Controller::cc`].
    pub fn csts(&self) -> u32 {
        self.regs.read32(REG_CSTS)
    }

    /// See [`Controller::cc`].
    pub fn version(&self) -> u32 {
        self.regs.read32(REG_VS)
    }

    /// CC.EN.
    pub fn enabled(&self) -> bool {
        CC_EN.is_set(self.cc().into())
    }

    /// CSTS.RDY.
    pub fn ready(&self) -> bool {
        CSTS_RDY.is_set(self.csts().into())
    }

    /// CSTS.CFS (a controller reading all ones counts as failed too).
    pub fn fatal(&self) -> bool {
        let csts = self.csts();
        csts == u32::MAX || CSTS_CFS.is_set(csts.into())
    }

    /// CSTS.SHST reads "shutdown processing complete".
    pub fn shutdown_complete(&self) -> bool {
        CSTS_SHST.get(self.csts().into()) == SHST_COMPLETE
    }

    /// How long CSTS.RDY may take to follow CC.EN: (CAP.TO + 1) x 500 ms, as Linux waits.
    pub fn ready_timeout_ms(&self) -> u64 {
        (CAP_TO.get(self.cap) + 1) * 500
    }

    /// CAP and VS in words, for the logs.
    pub fn describe(&self) -> String {
        let vs = self.version();
        alloc::format!(
            "CAP {:#x} (MQES {}, TO {} ms, DSTRD {}, NSSRS {}, NVM command set {}, pages {}-{} KiB), VS {}.{}.{}",
            self.cap,
            CAP_MQES.get(self.cap) + 1,
            CAP_TO.get(self.cap) * 500,
            CAP_DSTRD.get(self.cap),
            CAP_NSSRS.is_set(self.cap),
            CAP_CSS_NVM.is_set(self.cap),
            4u64 << CAP_MPSMIN.get(self.cap),
            4u64 << CAP_MPSMAX.get(self.cap),
            vs >> 16,
            (vs >> 8) & 0xFF,
            vs & 0xFF
        )
    }

    /// Waits at most `ms` for CSTS field `field` to read `want`; a controller that
    /// reads all ones ends the wait as [`NvmeError::NotResponding`], one that reports a
    /// fatal status as [`NvmeError::Fatal`].
    fn wait_csts(
        &self,
        field: Field,
        want: u64,
        ms: u64,
        what: &'static str,
    ) -> Result<(), NvmeError> {
        let regs = &self.regs;
        let mut last = 0u32;
        // Whether it ended by itself or by the bound, `last` says which and why.
        crate::apic::wait_until(ms, || {
            last = regs.read32(REG_CSTS);
            last == u32::MAX || CSTS_CFS.is_set(last.into()) || field.get(last.into()) == want
        });
        if last == u32::MAX {
            return Err(NvmeError::NotResponding);
        }
        if field.get(last.into()) == want {
            return Ok(());
        }
        if CSTS_CFS.is_set(last.into()) {
            return Err(NvmeError::Fatal(last));
        }
        Err(NvmeError::Timeout { what, ms, csts: last })
    }

    /// Waits at most `ms` for CSTS.RDY to read `ready` without changing anything (the
    /// tests use it to show the bound holds).
    pub fn wait_ready(&self, ready: bool, ms: u64) -> Result<(), NvmeError> {
        let what = if ready { "CSTS.RDY=1" } else { "CSTS.RDY=0" };
        self.wait_csts(CSTS_RDY, ready.into(), ms, what)
    }

    /// Normal shutdown: CC.SHN = 01b, then CSTS.SHST = complete within [`SHUTDOWN_MS`].
    /// The controller finishes or aborts what it has in flight (completions land in the
    /// queues the owner set up) and flushes its volatile write cache.
    pub fn shutdown(&mut self) -> Result<(), NvmeError> {
        let cc = CC_SHN.set(self.cc().into(), SHN_NORMAL);
        self.regs.write32(REG_CC, cc as u32);
        self.wait_csts(
            CSTS_SHST,
            SHST_COMPLETE,
            SHUTDOWN_MS,
            "CSTS.SHST=complete after CC.SHN=normal",
        )
    }

    /// Controller reset: CC.EN = 0 (and CC.SHN cleared), then CSTS.RDY = 0 within
    /// CAP.TO. Afterwards the controller holds no queue and issues no DMA.
    pub fn disable(&mut self) -> Result<(), NvmeError> {
        let cc = CC_SHN.set(CC_EN.with(self.cc().into(), false), 0);
        self.regs.write32(REG_CC, cc as u32);
        self.wait_csts(CSTS_RDY, 0, self.ready_timeout_ms(), "CSTS.RDY=0 after CC.EN=0")
    }

    /// Enables the controller with `q` as its admin queue pair (NVM command set, 4 KiB
    /// pages, round-robin arbitration), then waits for CSTS.RDY within CAP.TO. The
    /// controller must be disabled first.
    pub fn enable(&mut self, q: &mut AdminQueues) -> Result<(), NvmeError> {
        let csts = self.csts();
        if self.enabled() || CSTS_RDY.is_set(csts.into()) {
            return Err(NvmeError::NotDisabled(csts));
        }
        if CAP_MPSMIN.get(self.cap) != 0 {
            return Err(NvmeError::Unsupported("4 KiB memory pages"));
        }
        if !CAP_CSS_NVM.is_set(self.cap) {
            return Err(NvmeError::Unsupported("the NVM command set"));
        }
        if u64::from(q.entries) > CAP_MQES.get(self.cap) + 1 {
            return Err(NvmeError::Unsupported("an admin queue that deep"));
        }
        q.reset();
        let size = u64::from(q.entries - 1);
        self.regs.write32(REG_AQA, (AQA_ASQS.encode(size) | AQA_ACQS.encode(size)) as u32);
        // 64-bit registers as two 32-bit writes, low half first (the specification allows
        // it, and every controller takes it).
        for (reg, iova) in [(REG_ASQ, q.sq_iova), (REG_ACQ, q.cq_iova)] {
            self.regs.write32(reg, iova as u32);
            self.regs.write32(reg + 4, (iova >> 32) as u32);
        }
        let cc = CC_EN.encode(1)
            | CC_CSS.encode(0)
            | CC_MPS.encode(0)
            | CC_AMS.encode(0)
            | CC_SHN.encode(0)
            | CC_IOSQES.encode(IOSQES)
            | CC_IOCQES.encode(IOCQES);
        self.regs.write32(REG_CC, cc as u32);
        self.wait_csts(CSTS_RDY, 1, self.ready_timeout_ms(), "CSTS.RDY=1 after CC.EN=1")
    }

    /// Identify Controller (CNS 01h) into the 4 KiB page at IOVA `prp1`; returns the
    /// completion, whatever its status (a refused DMA shows as a Data Transfer Error).
    pub fn identify_controller(
        &mut self,
        q: &mut AdminQueues,
        prp1: u64,
    ) -> Result<Completion, NvmeError> {
        if prp1 & (IDENTIFY_BYTES - 1) != 0 {
            return Err(NvmeError::BadArgument("the Identify buffer must be one aligned page"));
        }
        let mut sqe = [0u64; 8];
        sqe[0] = SQE_OPCODE.encode(OPC_IDENTIFY) | SQE_NSID.encode(0);
        sqe[SQE_PRP1_QWORD] = prp1;
        sqe[SQE_CDW10_QWORD] = SQE_CNS.encode(CNS_CONTROLLER);
        self.submit(q, sqe)
    }

    /// Writes `sqe` (with the next command id) at the queue's tail, rings the doorbell,
    /// and polls the completion queue's head entry for the expected phase, bounded by
    /// [`COMMAND_MS`]; then consumes the entry and tells the controller. One command is
    /// in flight at a time. After a timeout the queues are out of step with the
    /// controller: disable it (and enable again) before the next command.
    fn submit(&mut self, q: &mut AdminQueues, mut sqe: [u64; 8]) -> Result<Completion, NvmeError> {
        let cid = q.next_cid;
        q.next_cid = q.next_cid.wrapping_add(1).max(1);
        sqe[0] = SQE_CID.set(sqe[0], cid.into());
        let mut mem = KernelMemory;
        let slot = q.sq_phys + u64::from(q.tail) * SQE_BYTES;
        for (i, w) in sqe.iter().enumerate() {
            mem.write_u64(slot + 8 * i as u64, *w);
        }
        q.tail = (q.tail + 1) % q.entries;
        // The entry is in memory before the controller hears of it.
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        let sq_doorbell = self.doorbell(0);
        self.regs.write32(sq_doorbell, q.tail.into());
        let entry = q.cq_phys + u64::from(q.head) * CQE_BYTES + 8;
        let phase = q.phase;
        let arrived =
            crate::apic::wait_until(COMMAND_MS, || CQE_PHASE.is_set(mem.read_u64(entry)) == phase);
        if !arrived {
            return Err(NvmeError::Timeout {
                what: "the admin command's completion",
                ms: COMMAND_MS,
                csts: self.csts(),
            });
        }
        let dw = mem.read_u64(entry);
        q.head += 1;
        if q.head == q.entries {
            (q.head, q.phase) = (0, !q.phase);
        }
        let cq_doorbell = self.doorbell(1);
        self.regs.write32(cq_doorbell, q.head.into());
        let done = Completion {
            cid: CQE_CID.get(dw) as u16,
            status: (CQE_SCT.get(dw) as u8, CQE_SC.get(dw) as u8),
            dnr: CQE_DNR.is_set(dw),
            sq_head: CQE_SQHD.get(dw) as u16,
        };
        if done.cid != cid {
            return Err(NvmeError::WrongCompletion { expected: cid, got: done.cid });
        }
        Ok(done)
    }
}
