//! Driver for QEMU's `edu` test device (1234:11e8): a DMA engine with a 4 KiB buffer,
//! used to prove IOMMU translation, isolation and invalidation with data that moves.
//!
//! QEMU 7.2 aborts the whole emulator on a DMA count of 0 or 4096 or a range outside the
//! buffer, so every request is checked here before it reaches the device.
#![deny(unsafe_code)]

use crate::mmio::MmioWindow;
use crate::pci::{Bdf, PciFunction};
use alloc::vec::Vec;
use core::fmt;

const VENDOR: u16 = 0x1234;
const DEVICE: u16 = 0x11e8;
/// (vendor, device) of QEMU's edu: the only device the built-in guest is given.
pub const PCI_ID: (u16, u16) = (VENDOR, DEVICE);
const REG_ID: usize = 0x00;
const REG_ALIVE: usize = 0x04;
const REG_RAISE_IRQ: usize = 0x60;
const REG_ACK_IRQ: usize = 0x64;
const REG_DMA_SRC: usize = 0x80;
const REG_DMA_DST: usize = 0x88;
const REG_DMA_COUNT: usize = 0x90;
const REG_DMA_CMD: usize = 0x98;
const CMD_START: u64 = 1;
const CMD_TO_RAM: u64 = 2;
/// Device-side address of the internal buffer.
const BUFFER: u64 = 0x40000;
/// Bytes one DMA may move (QEMU 7.2 aborts on 4096).
pub const MAX_DMA: usize = 4095;
/// Timer ticks a DMA may take (it takes 100 ms of virtual time).
const DMA_TICKS: u64 = 5_000;

/// Why a DMA was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EduError {
    /// Count 0, over [`MAX_DMA`], or the buffer range would overflow.
    BadRequest,
    /// The device never cleared its busy bit.
    Timeout,
}

impl fmt::Display for EduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EduError::BadRequest => f.write_str("edu DMA request out of range"),
            EduError::Timeout => f.write_str("edu DMA did not complete in time"),
        }
    }
}

/// One edu device with its register window mapped and bus mastering on.
pub struct Edu {
    /// Where it is (its requester id is what the IOMMU sees).
    pub bdf: Bdf,
    regs: MmioWindow,
    function: PciFunction,
    /// DMAs issued, for the logs.
    pub dmas: u64,
}

impl Edu {
    /// Finds every edu device, maps BAR0 and enables bus mastering.
    pub fn find_all(pci: &[PciFunction]) -> Vec<Edu> {
        let mut out = Vec::new();
        for f in pci.iter().filter(|f| f.vendor == VENDOR && f.device == DEVICE) {
            let Some((base, size)) = f.memory_bar(0) else {
                log::warn!("edu {}: no memory BAR0", f.bdf);
                continue;
            };
            let regs = match MmioWindow::map(base, size.min(1 << 20) as usize) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("edu {}: cannot map BAR0: {e}", f.bdf);
                    continue;
                }
            };
            f.config().set_bus_master(true);
            let mut edu = Edu { bdf: f.bdf, regs, function: f.clone(), dmas: 0 };
            if !edu.alive() {
                log::warn!("edu {}: liveness check failed", f.bdf);
                continue;
            }
            out.push(edu);
        }
        out
    }

    /// The liveness register returns the complement of what was written.
    pub fn alive(&mut self) -> bool {
        let id = self.regs.read32(REG_ID);
        self.regs.write32(REG_ALIVE, 0x1234_5678);
        id >> 16 != 0 && self.regs.read32(REG_ALIVE) == !0x1234_5678
    }

    /// The device's configuration space (for its MSI capability).
    pub fn config(&self) -> crate::pci::ConfigSpace {
        self.function.config()
    }

    /// Raises the device's interrupt (register 0x60): an MSI when MSI is enabled.
    pub fn raise_interrupt(&mut self, status: u32) {
        self.regs.write32(REG_RAISE_IRQ, status);
    }

    /// Acknowledges (lowers) the device's interrupt status bits (register 0x64).
    pub fn ack_interrupt(&mut self, status: u32) {
        self.regs.write32(REG_ACK_IRQ, status);
    }

    /// Turns bus mastering on or off (off quiesces the device's DMA).
    pub fn set_bus_master(&self, on: bool) {
        self.function.config().set_bus_master(on);
    }

    fn dma(&mut self, src: u64, dst: u64, len: usize, to_ram: bool) -> Result<(), EduError> {
        if len == 0 || len > MAX_DMA {
            return Err(EduError::BadRequest);
        }
        self.wait_idle()?;
        self.regs.write64(REG_DMA_SRC, src);
        self.regs.write64(REG_DMA_DST, dst);
        self.regs.write64(REG_DMA_COUNT, len as u64);
        self.regs.write64(REG_DMA_CMD, CMD_START | if to_ram { CMD_TO_RAM } else { 0 });
        self.dmas += 1;
        self.wait_idle()
    }

    fn wait_idle(&mut self) -> Result<(), EduError> {
        let regs = &self.regs;
        if crate::apic::wait_until(DMA_TICKS, || regs.read64(REG_DMA_CMD) & CMD_START == 0) {
            Ok(())
        } else {
            Err(EduError::Timeout)
        }
    }

    fn check(offset: usize, len: usize) -> Result<u64, EduError> {
        match offset.checked_add(len) {
            Some(end) if end <= MAX_DMA => Ok(BUFFER + offset as u64),
            _ => Err(EduError::BadRequest),
        }
    }

    /// Device reads `len` bytes of memory at `iova` into its buffer at `offset`.
    pub fn read_from_memory(
        &mut self,
        iova: u64,
        offset: usize,
        len: usize,
    ) -> Result<(), EduError> {
        let buf = Self::check(offset, len)?;
        self.dma(iova, buf, len, false)
    }

    /// Device writes `len` bytes of its buffer at `offset` to memory at `iova`.
    pub fn write_to_memory(
        &mut self,
        iova: u64,
        offset: usize,
        len: usize,
    ) -> Result<(), EduError> {
        let buf = Self::check(offset, len)?;
        self.dma(buf, iova, len, true)
    }

    /// Copies `len` bytes from `src_iova` to `dst_iova` through the device's buffer.
    pub fn copy(&mut self, src_iova: u64, dst_iova: u64, len: usize) -> Result<(), EduError> {
        self.read_from_memory(src_iova, 0, len)?;
        self.write_to_memory(dst_iova, 0, len)
    }
}

/// Waits (at most `max_ticks`) for an edu function's DMA engine to go idle: `None` when
/// `f` is no edu device (nothing known to wait for), else whether it went idle. Used at
/// partition destroy, after bus mastering was turned off.
pub fn drain(f: &PciFunction, max_ticks: u64) -> Option<bool> {
    if f.vendor != VENDOR || f.device != DEVICE {
        return None;
    }
    let (base, size) = f.memory_bar(0)?;
    let regs = MmioWindow::map(base, size.min(1 << 20) as usize).ok()?;
    Some(crate::apic::wait_until(max_ticks, || regs.read64(REG_DMA_CMD) & CMD_START == 0))
}
