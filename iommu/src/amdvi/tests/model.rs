//! A small AMD-Vi model for host tests: registers behind [`Mmio`], commands executed when
//! the tail register is written (recorded, COMPLETION_WAIT stores performed), write-1-to-
//! clear status, and a shared physical memory that records CPU writes and flushes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::amdvi::command::Command;
use crate::amdvi::regs::{self, Status};
use crate::platform::{FrameAllocator, Mmio, PhysAddr, PhysMemory, PAGE_SIZE};

/// What the CPU side did to memory, shared between the driver's handle and the test.
#[derive(Default)]
pub struct MemState {
    pub words: HashMap<u64, u64>,
    pub next_frame: u64,
    /// Distance between consecutive fresh frames (PAGE_SIZE, -PAGE_SIZE, 2 * PAGE_SIZE...).
    pub stride: i64,
    pub free_list: Vec<u64>,
    pub frames_left: Option<usize>,
    pub allocated: usize,
    pub freed: Vec<u64>,
    pub writes: Vec<(u64, u64)>,
    pub flushes: Vec<(u64, u64)>,
}

/// The driver's memory handle (and the test's view of the same memory).
#[derive(Clone)]
pub struct TestMemory(pub Rc<RefCell<MemState>>);

impl TestMemory {
    /// Ascending frames from 1 MiB.
    pub fn new() -> Self {
        Self::with_stride(0x10_0000, PAGE_SIZE as i64)
    }
    pub fn with_stride(first: u64, stride: i64) -> Self {
        TestMemory(Rc::new(RefCell::new(MemState {
            next_frame: first,
            stride,
            ..Default::default()
        })))
    }
    pub fn read(&self, addr: u64) -> u64 {
        self.0.borrow().words.get(&addr).copied().unwrap_or(0)
    }
    /// A write by the device (not recorded as a CPU write).
    pub fn device_write(&self, addr: u64, value: u64) {
        self.0.borrow_mut().words.insert(addr, value);
    }
}

impl FrameAllocator for TestMemory {
    fn alloc_zeroed_frame(&mut self) -> Option<PhysAddr> {
        let mut m = self.0.borrow_mut();
        if m.frames_left == Some(0) {
            return None;
        }
        if let Some(left) = m.frames_left.as_mut() {
            *left -= 1;
        }
        let frame = match m.free_list.pop() {
            Some(f) => f,
            None => {
                let f = m.next_frame;
                m.next_frame = (f as i64 + m.stride) as u64;
                f
            }
        };
        m.words.retain(|&a, _| a < frame || a >= frame + PAGE_SIZE);
        m.allocated += 1;
        Some(frame)
    }
    fn free_frame(&mut self, frame: PhysAddr) {
        let mut m = self.0.borrow_mut();
        m.freed.push(frame);
        m.allocated -= 1;
    }
}

impl PhysMemory for TestMemory {
    fn read_u64(&self, addr: PhysAddr) -> u64 {
        self.read(addr)
    }
    fn write_u64(&mut self, addr: PhysAddr, value: u64) {
        let mut m = self.0.borrow_mut();
        m.words.insert(addr, value);
        m.writes.push((addr, value));
    }
    fn flush_for_device(&mut self, addr: PhysAddr, len: u64) {
        self.0.borrow_mut().flushes.push((addr, len));
    }
}

/// Register state and behaviour switches, shared with the test.
pub struct ModelState {
    pub regs: HashMap<usize, u64>,
    /// Every command executed, in order.
    pub commands: Vec<Command>,
    /// Perform COMPLETION_WAIT stores (false: a unit that never completes).
    pub store_completions: bool,
    /// Execute commands on tail writes (false: a stalled unit whose ring fills up).
    pub execute: bool,
    /// Head register reads the buffer size after a wrap, as QEMU 7.2's does.
    pub qemu_head_quirk: bool,
    /// The command buffer has stopped (as after an illegal command): Status.CMD_BUF_RUN
    /// reads clear and nothing more executes.
    pub command_buffer_stopped: bool,
    /// Status reads that still show CMD_BUF_RUN clear after the buffer was (re)started:
    /// real units set the run bit some time after CmdBufEn.
    pub run_lag: u32,
    /// Reads left before CMD_BUF_RUN shows.
    lag_left: u32,
    /// Every value written to the control register.
    pub control_writes: Vec<u64>,
    /// Every register access as (offset, width in bytes).
    pub accesses: Vec<(usize, u8)>,
    head: u64,
    head_register: u64,
}

pub struct AmdViModel {
    pub state: Rc<RefCell<ModelState>>,
    mem: TestMemory,
}

/// EFR of QEMU 7.2's amd-iommu.
pub const QEMU_EFR: u64 = 0x29d3;

impl AmdViModel {
    pub fn new(mem: &TestMemory, efr: u64) -> Self {
        let mut regs = HashMap::new();
        regs.insert(regs::EXTENDED_FEATURES, efr);
        let state = ModelState {
            regs,
            commands: Vec::new(),
            store_completions: true,
            execute: true,
            qemu_head_quirk: true,
            command_buffer_stopped: false,
            run_lag: 0,
            lag_left: 0,
            control_writes: Vec::new(),
            accesses: Vec::new(),
            head: 0,
            head_register: 0,
        };
        Self { state: Rc::new(RefCell::new(state)), mem: mem.clone() }
    }

    fn run_commands(&self) {
        let mut s = self.state.borrow_mut();
        let control = s.regs.get(&regs::CONTROL).copied().unwrap_or(0);
        if !s.execute
            || s.command_buffer_stopped
            || s.lag_left > 0
            || control & regs::Control::CMD_BUF_EN.bits() == 0
        {
            return;
        }
        let base_reg = s.regs.get(&regs::COMMAND_BUFFER_BASE).copied().unwrap_or(0);
        let base = base_reg & regs::BASE_ADDRESS_MASK;
        let len = 16u64 << ((base_reg >> regs::RING_LENGTH_SHIFT) & 0xF);
        let tail = s.regs.get(&regs::COMMAND_TAIL).copied().unwrap_or(0);
        while s.head != tail {
            let at = base + s.head;
            let cmd = Command::from_quads([self.mem.read(at), self.mem.read(at + 8)]);
            if let crate::amdvi::DecodedCommand::CompletionWait { store: true, address, data } =
                cmd.decode()
            {
                if s.store_completions {
                    self.mem.device_write(address, data);
                }
            }
            s.commands.push(cmd);
            s.head += 16;
            s.head_register = s.head;
            if s.head >= len {
                s.head = 0;
            }
        }
        if !s.qemu_head_quirk {
            s.head_register = s.head;
        }
    }
}

impl Mmio for AmdViModel {
    fn read32(&self, offset: usize) -> u32 {
        let v = self.read64(offset & !7);
        self.state.borrow_mut().accesses.pop();
        self.state.borrow_mut().accesses.push((offset, 4));
        if offset & 4 == 0 {
            v as u32
        } else {
            (v >> 32) as u32
        }
    }
    fn read64(&self, offset: usize) -> u64 {
        let mut s = self.state.borrow_mut();
        s.accesses.push((offset, 8));
        if offset == regs::COMMAND_HEAD {
            return s.head_register;
        }
        if offset == regs::STATUS {
            // As QEMU: CMD_BUF_RUN follows CONTROL's CmdBufEn while the IOMMU is enabled.
            let control =
                regs::Control::from_bits_retain(s.regs.get(&regs::CONTROL).copied().unwrap_or(0));
            let mut running = control.contains(regs::Control::CMD_BUF_EN | regs::Control::IOMMU_EN)
                && !s.command_buffer_stopped;
            let mut started = false;
            if running && s.lag_left > 0 {
                // Not fetching yet: commands wait until the run bit shows.
                s.lag_left -= 1;
                started = s.lag_left == 0;
                running = false;
            }
            let status = s.regs.get(&offset).copied().unwrap_or(0);
            drop(s);
            if started {
                self.run_commands();
            }
            return if running { status | Status::CMD_BUF_RUN.bits() } else { status };
        }
        s.regs.get(&offset).copied().unwrap_or(0)
    }
    fn write32(&mut self, offset: usize, value: u32) {
        let old = self.state.borrow().regs.get(&(offset & !7)).copied().unwrap_or(0);
        let merged = if offset & 4 == 0 {
            (old & !0xFFFF_FFFF) | u64::from(value)
        } else {
            (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
        };
        self.write64(offset & !7, merged);
        let mut s = self.state.borrow_mut();
        s.accesses.pop();
        s.accesses.push((offset, 4));
    }
    fn write64(&mut self, offset: usize, value: u64) {
        {
            let mut s = self.state.borrow_mut();
            s.accesses.push((offset, 8));
            match offset {
                regs::EXTENDED_FEATURES => return,
                // A locked SMI filter register ignores writes until reset.
                o if (regs::SMI_FILTER_BASE..regs::SMI_FILTER_BASE + 16 * 8).contains(&o)
                    && s.regs.get(&o).copied().unwrap_or(0) & (1 << 17) != 0 =>
                {
                    return
                }
                regs::STATUS => {
                    let cleared = value & Status::W1C.bits();
                    *s.regs.entry(offset).or_insert(0) &= !cleared;
                    return;
                }
                regs::COMMAND_HEAD => {
                    s.head = value & regs::RING_POINTER_MASK;
                    s.head_register = s.head;
                }
                regs::CONTROL => {
                    let before = s.regs.get(&regs::CONTROL).copied().unwrap_or(0);
                    let on = regs::Control::CMD_BUF_EN | regs::Control::IOMMU_EN;
                    let was = regs::Control::from_bits_retain(before).contains(on);
                    let now = regs::Control::from_bits_retain(value).contains(on);
                    if !now {
                        // Turning the buffer off resets a stopped one.
                        s.command_buffer_stopped = false;
                    }
                    if now && !was {
                        s.lag_left = s.run_lag;
                    }
                    s.control_writes.push(value);
                }
                _ => {}
            }
            let masked = match offset {
                regs::COMMAND_TAIL | regs::EVENT_HEAD | regs::EVENT_TAIL => {
                    value & regs::RING_POINTER_MASK
                }
                _ => value,
            };
            s.regs.insert(offset, masked);
        }
        if matches!(offset, regs::COMMAND_TAIL | regs::CONTROL) {
            self.run_commands();
        }
    }
}

/// A fresh memory and model pair.
pub fn setup(efr: u64) -> (TestMemory, AmdViModel) {
    let mem = TestMemory::new();
    let model = AmdViModel::new(&mem, efr);
    (mem, model)
}

/// Decoded commands the model executed, from index `from` on.
pub fn decoded_since(
    model: &Rc<RefCell<ModelState>>,
    from: usize,
) -> Vec<crate::amdvi::DecodedCommand> {
    model.borrow().commands[from..].iter().map(|c| c.decode()).collect()
}
