//! One AMD-Vi unit: owns its register window, device table, command buffer, event log and
//! completion-wait semaphore, and offers attach / block / invalidate / drain.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::error::HwError;
use crate::invalidate::DomainId;
use crate::platform::{FrameAllocator, Mmio, PhysAddr, PhysMemory};

use crate::amdvi::command::{wait_while_running, Command, CommandBuffer};
use crate::amdvi::device_table::{DeviceTable, DeviceTableEntry, DTE_SIZE};
use crate::amdvi::event_log::{Event, EventCounters, EventLog};
use crate::amdvi::interrupts::{DeviceSetting, DteInterrupts, InterruptTable};
use crate::amdvi::regs::{self, Control, Efr, Status};

mod bringup;
mod event_interrupt;
mod interrupt_fields;
mod invalidation;
mod smi_filter;

pub use bringup::initial_control;
pub use smi_filter::SmiFilterLock;

/// Counts of what the driver asked of the hardware (for logs and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitStats {
    /// Commands written to the command buffer, of every kind.
    pub commands: u64,
    /// COMPLETION_WAIT commands (each one a sync).
    pub completion_waits: u64,
    /// INVALIDATE_IOMMU_PAGES for one page or an aligned range.
    pub page_invalidations: u64,
    /// INVALIDATE_IOMMU_PAGES for a whole domain.
    pub domain_invalidations: u64,
    /// INVALIDATE_DEVTAB_ENTRY commands.
    pub devtab_invalidations: u64,
    /// Times a stopped command buffer was reset and restarted.
    pub command_buffer_restarts: u64,
    /// INVALIDATE_INTERRUPT_TABLE commands.
    pub interrupt_table_invalidations: u64,
}

/// An AMD-Vi IOMMU unit driven through its MMIO window `R`, with tables in memory `P`.
pub struct AmdViUnit<R: Mmio, P: FrameAllocator + PhysMemory> {
    regs: R,
    mem: P,
    efr: Efr,
    max_levels: u32,
    device_table: DeviceTable,
    /// The interrupt table every device id points at until it gets its own: all entries
    /// RemapEn = 0, so every fixed interrupt is aborted.
    empty_interrupts: InterruptTable,
    /// IOAPIC/HPET device ids and the setting bytes their pass bits came from.
    platform_sources: Vec<(u16, DeviceSetting)>,
    commands: CommandBuffer,
    events: EventLog,
    semaphore: PhysAddr,
    sequence: u64,
    enabled: bool,
    stats: UnitStats,
    counters: EventCounters,
    /// Domains attached since the last full flush (`invalidate_all` covers them too).
    attached_since_flush: alloc::collections::BTreeSet<DomainId>,
    /// IVHD flags for the Control register (see `bringup.rs`).
    ivhd_flags: u8,
    /// What enable did to the SMI filter registers (see `smi_filter.rs`).
    smi_filters: SmiFilterLock,
    /// Control.EventIntEn: events raise the unit's interrupt (see `event_interrupt.rs`).
    event_interrupt: bool,
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> AmdViUnit<R, P> {
    /// Reads the EFR and allocates the device table (covering `0..=max_device_id`, all
    /// entries blocking), command buffer, event log and semaphore. Touches no register
    /// but the EFR: call [`enable`](Self::enable) to start the unit.
    pub fn new(regs: R, mut mem: P, max_device_id: u16) -> Result<Self, HwError> {
        let efr = Efr(regs.read64(regs::EXTENDED_FEATURES));
        let max_levels = efr
            .max_host_levels()
            .ok_or(HwError::Unsupported { what: "host translation (EFR.HATS is reserved)" })?;
        let device_table = DeviceTable::allocate(&mut mem, max_device_id)?;
        let empty_interrupts = match InterruptTable::allocate(&mut mem) {
            Ok(t) => t,
            Err(e) => {
                device_table.free(&mut mem);
                return Err(e);
            }
        };
        let remapped = match DteInterrupts::remapped(empty_interrupts.base()) {
            Ok(q) => q,
            Err(e) => {
                empty_interrupts.free(&mut mem);
                device_table.free(&mut mem);
                return Err(e);
            }
        };
        for devid in 0..device_table.entries() {
            if let Some(at) = device_table.entry_address(devid as u16) {
                mem.write_u64(at + 16, remapped.0);
            }
        }
        mem.flush_for_device(device_table.base(), device_table.entries() * DTE_SIZE);
        let mut frames = [0; 3];
        for i in 0..frames.len() {
            match mem.alloc_zeroed_frame() {
                Some(frame) => frames[i] = frame,
                None => {
                    frames[..i].iter().for_each(|&f| mem.free_frame(f));
                    empty_interrupts.free(&mut mem);
                    device_table.free(&mut mem);
                    return Err(HwError::OutOfMemory);
                }
            }
        }
        Ok(Self {
            regs,
            mem,
            efr,
            max_levels,
            device_table,
            empty_interrupts,
            platform_sources: Vec::new(),
            commands: CommandBuffer::new(frames[0]),
            events: EventLog::new(frames[1]),
            semaphore: frames[2],
            sequence: 0,
            enabled: false,
            stats: UnitStats::default(),
            counters: EventCounters::default(),
            attached_since_flush: alloc::collections::BTreeSet::new(),
            ivhd_flags: 0,
            smi_filters: SmiFilterLock::default(),
            event_interrupt: false,
        })
    }

    /// Turns everything off, programs the bases, builds Control from zero (see
    /// `bringup.rs`), enables the command buffer, event log and translation, waits for the
    /// command buffer to run, then flushes every cache the unit may hold from before and
    /// waits for that to complete. Should any step fail after translation was turned on,
    /// the unit is disabled again on purpose (nothing half-enabled) and the error returned.
    pub fn enable(&mut self) -> Result<(), HwError> {
        let result = self.try_enable();
        if result.is_err() {
            self.disable();
        }
        result
    }

    fn try_enable(&mut self) -> Result<(), HwError> {
        let quiet = bringup::initial_control(self.ivhd_flags);
        self.regs.write64(regs::CONTROL, 0);
        self.regs.write64(regs::DEVICE_TABLE_BASE, self.device_table.base_register_value());
        self.regs.write64(regs::COMMAND_BUFFER_BASE, self.commands.base_register_value());
        self.regs.write64(regs::COMMAND_HEAD, 0);
        self.regs.write64(regs::COMMAND_TAIL, 0);
        self.commands.reset();
        self.regs.write64(regs::EVENT_LOG_BASE, self.events.base_register_value());
        self.regs.write64(regs::EVENT_HEAD, 0);
        self.regs.write64(regs::EVENT_TAIL, 0);
        self.events.reset();
        // No exclusion range: every device goes through its device table entry.
        self.regs.write64(regs::EXCLUSION_BASE, 0);
        self.regs.write64(regs::EXCLUSION_LIMIT, 0);
        self.regs.write64(regs::STATUS, Status::W1C.bits());
        // Before translation goes on: no window where a device's SMI passes a filter
        // someone else may still rewrite.
        self.smi_filters = self.lock_smi_filters();
        let mut rings = quiet | Control::CMD_BUF_EN | Control::EVENT_LOG_EN;
        if self.event_interrupt {
            rings |= Control::EVENT_INT_EN;
        }
        self.regs.write64(regs::CONTROL, rings.bits());
        self.regs.write64(regs::CONTROL, (rings | Control::IOMMU_EN).bits());
        self.enabled = true;
        self.wait_command_buffer(true)?;
        self.invalidate_all()
    }

    /// Stops translation, command processing and event logging (DMA then passes
    /// untranslated: only for shutdown or handing the unit back).
    pub fn disable(&mut self) {
        let control = Control::from_bits_retain(self.regs.read64(regs::CONTROL));
        self.regs.write64(regs::CONTROL, control.difference(Control::DRIVER_OWNED).bits());
        self.enabled = false;
    }

    /// The register window (for the kernel's hand-off tests, which start a second driver
    /// on the same unit to play the previous owner).
    pub fn registers(&self) -> &R {
        &self.regs
    }

    /// The decoded Extended Feature Register.
    pub fn efr(&self) -> Efr {
        self.efr
    }
    /// Page-table levels new domains should use: 4 (48-bit IOVA), which every HATS allows.
    pub fn levels(&self) -> u32 {
        4.min(self.max_levels)
    }
    /// The deepest page table this unit walks (from EFR.HATS).
    pub fn max_levels(&self) -> u32 {
        self.max_levels
    }
    /// Number of device ids the device table covers (`0..device_table_entries()`).
    pub fn device_table_entries(&self) -> u64 {
        self.device_table.entries()
    }
    /// The device table entry of `devid` as the hardware sees it now.
    pub fn device_entry(&self, devid: u16) -> Option<DeviceTableEntry> {
        self.device_table.read(&self.mem, devid)
    }
    /// Command counts so far.
    pub fn stats(&self) -> UnitStats {
        UnitStats { commands: self.commands.issued(), ..self.stats }
    }
    /// Event counts so far.
    pub fn event_counters(&self) -> &EventCounters {
        &self.counters
    }

    /// The unit in words, one line per item: EFR features, levels, table sizes, state.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        lines.push(format!("AMD-Vi EFR {:#x}: {}", self.efr.0, self.efr.words().join(", ")));
        lines.push(format!(
            "page tables: {} levels used, up to {} supported",
            self.levels(),
            self.max_levels
        ));
        lines.push(format!(
            "device table {:#x}: {} entries; command buffer {:#x}: {} slots; event log {:#x}: {} records",
            self.device_table.base(),
            self.device_table.entries(),
            self.commands.base(),
            CommandBuffer::LEN / crate::amdvi::command::COMMAND_SIZE,
            self.events.base(),
            EventLog::LEN / crate::amdvi::event_log::EVENT_SIZE
        ));
        let control = self.regs.read64(regs::CONTROL);
        let status = self.regs.read64(regs::STATUS);
        lines.push(format!(
            "{}; control {control:#x}, status {status:#x}",
            if self.enabled { "enabled" } else { "not enabled" }
        ));
        lines
    }

    /// Points `devid` at the v1 page table `root` with `levels` levels under `domain`,
    /// reads and writes allowed, then invalidates the entry and the IOTLB and waits.
    /// Before [`enable`](Self::enable) only the entry is written (enable flushes).
    pub fn attach_device(
        &mut self,
        devid: u16,
        domain: DomainId,
        root: PhysAddr,
        levels: u32,
    ) -> Result<(), HwError> {
        if levels > self.max_levels {
            return Err(HwError::Unsupported {
                what: "more page-table levels than EFR.HATS allows",
            });
        }
        let at = self.entry_address(devid)?;
        let old = self.device_table.read(&self.mem, devid).unwrap_or(DeviceTableEntry::blocking());
        // The interrupt fields (quad 2) are the device's own and stay as they are.
        let new =
            DeviceTableEntry::translated(domain, root, levels)?.with_interrupts(old.interrupts());
        if !self.enabled {
            // Before enable (firmware-reserved identity domains): the entry is in place
            // when translation goes on, and enable's flush covers every cache.
            let quads = new.quads();
            for (i, &q) in quads.iter().enumerate() {
                self.write_quad(at, i, q);
            }
            self.attached_since_flush.insert(domain);
            return Ok(());
        }
        if old.is_translating() && old != new {
            // Never let the hardware read the new DomainID with the old root (or the
            // reverse): pass through a blocking entry, fully invalidated, first.
            self.write_quad(at, 0, DeviceTableEntry::blocking().quads()[0]);
            self.submit(Command::invalidate_devtab_entry(devid))?;
            self.completion_wait()?;
        }
        if !self.efr.invalidate_all() && !self.attached_since_flush.contains(&domain) {
            // Without INVALIDATE_IOMMU_ALL the enable flush could not reach translations
            // cached under ids no entry named (a previous owner's): drop any under this
            // id, and wait, before an entry carrying it goes live.
            self.submit_domain_invalidation(domain)?;
            self.completion_wait()?;
        }
        self.attached_since_flush.insert(domain);
        let quads = new.quads();
        for (i, &q) in quads.iter().enumerate().skip(1) {
            self.write_quad(at, i, q);
        }
        self.write_quad(at, 0, quads[0]);
        self.after_entry_change(devid, old, Some(domain))
    }

    /// Gives `devid` the blocking entry (V=1, TV=1, Mode=0, IR=IW=0), then invalidates
    /// the entry and whatever its old domain cached, and waits.
    pub fn block_device(&mut self, devid: u16) -> Result<(), HwError> {
        let at = self.entry_address(devid)?;
        let old = self.device_table.read(&self.mem, devid).unwrap_or(DeviceTableEntry::blocking());
        // Blocking DMA leaves the interrupt fields (quad 2) alone.
        let blocking = DeviceTableEntry::blocking().with_interrupts(old.interrupts()).quads();
        self.write_quad(at, 0, blocking[0]);
        for (i, &q) in blocking.iter().enumerate().skip(1) {
            self.write_quad(at, i, q);
        }
        if !self.enabled {
            return Ok(());
        }
        self.after_entry_change(devid, old, None)
    }

    /// Hands every queued command to the IOMMU followed by a COMPLETION_WAIT storing a
    /// fresh sequence number to the semaphore, polled (bounded) until it lands: every
    /// command queued before has then completed.
    pub fn completion_wait(&mut self) -> Result<(), HwError> {
        self.completion_wait_with(Command::completion_wait)
    }

    /// [`completion_wait`](Self::completion_wait) with the COMPLETION_WAIT `make` builds
    /// from the semaphore address and the sequence number.
    fn completion_wait_with(&mut self, make: fn(PhysAddr, u64) -> Command) -> Result<(), HwError> {
        self.sequence = self.sequence.wrapping_add(1).max(1);
        let sequence = self.sequence;
        self.submit(make(self.semaphore, sequence))?;
        self.commands.publish(&mut self.regs);
        self.stats.completion_waits += 1;
        let (mem, semaphore) = (&self.mem, self.semaphore);
        let waited =
            wait_while_running(&self.regs, "COMPLETION_WAIT store to the semaphore", || {
                mem.read_u64(semaphore) == sequence
            });
        if matches!(waited, Err(HwError::QueueError { .. })) {
            // The unit stopped its command buffer: the commands are lost (the error says
            // so), but the buffer is reset and restarted for the next ones.
            self.restart_command_buffer()?;
        }
        waited
    }

    /// Reads and decodes every new event record, restarting the log if it overflowed.
    /// Returns nothing (and costs two register reads) when no event came, as under QEMU 7.2.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        self.events.drain(&mut self.regs, &mut self.mem, &mut self.counters, &mut out);
        let status = Status::from_bits_retain(self.regs.read64(regs::STATUS));
        if status.contains(Status::EVENT_OVERFLOW) {
            self.counters.overflows += 1;
            self.restart_event_log(&mut out);
        }
        if status.contains(Status::EVENT_LOG_INT) {
            // Write-1-to-clear, after the drain: the next event interrupts again.
            self.regs.write64(regs::STATUS, Status::EVENT_LOG_INT.bits());
        }
        out
    }

    fn restart_event_log(&mut self, out: &mut Vec<Event>) {
        let control = Control::from_bits_retain(self.regs.read64(regs::CONTROL));
        self.regs.write64(regs::CONTROL, control.difference(Control::EVENT_LOG_EN).bits());
        // Records written between the first drain and the stop are still worth reading.
        self.events.drain(&mut self.regs, &mut self.mem, &mut self.counters, out);
        self.regs.write64(regs::STATUS, Status::EVENT_OVERFLOW.bits());
        self.regs.write64(regs::CONTROL, (control | Control::EVENT_LOG_EN).bits());
    }

    fn entry_address(&self, devid: u16) -> Result<PhysAddr, HwError> {
        self.device_table
            .entry_address(devid)
            .ok_or(HwError::Unsupported { what: "device id beyond the device table" })
    }

    fn write_quad(&mut self, entry: PhysAddr, index: usize, value: u64) {
        let at = entry + 8 * index as u64;
        self.mem.write_u64(at, value);
        self.mem.flush_for_device(entry, DTE_SIZE);
    }

    fn after_entry_change(
        &mut self,
        devid: u16,
        old: DeviceTableEntry,
        new_domain: Option<DomainId>,
    ) -> Result<(), HwError> {
        self.submit(Command::invalidate_devtab_entry(devid))?;
        self.stats.devtab_invalidations += 1;
        // Translations cached under the old DomainID (QEMU keys them by device too).
        if old.is_translating() && Some(old.domain()) != new_domain {
            self.submit_domain_invalidation(old.domain())?;
        }
        if let Some(domain) = new_domain {
            self.submit_domain_invalidation(domain)?;
        }
        self.completion_wait()
    }

    /// Queues `cmd`; the IOMMU sees it at the next completion wait (which publishes the
    /// tail) or earlier if the ring fills. One tail write per batch, not per command.
    fn submit(&mut self, cmd: Command) -> Result<(), HwError> {
        if !self.enabled {
            return Err(HwError::Unsupported { what: "commands before the unit is enabled" });
        }
        self.commands.queue(&mut self.regs, &mut self.mem, cmd)
    }
}
