//! The partition lifecycle after creation: run (the exit loop and hypercalls, bounded by a
//! budget), stop, and the ordered teardown that ends in scrubbed memory.

use super::memory::GuestMemory;
use super::vcpu::{EntryState, Reg, VmExit};
use super::{image, Budget, Partition, PartitionError, RunReport, State, Stop};
use alloc::string::String;

impl Partition {
    /// Runs the guest until it reports done, halts, faults, or `budget` runs out.
    /// A finished guest (anything but an exhausted budget) leaves the partition stopped.
    pub fn run(&mut self, budget: Budget) -> Result<RunReport, PartitionError> {
        if self.state == State::Stopped {
            return Err(PartitionError::Stopped);
        }
        if self.state == State::Ready {
            let info = self.boot_info();
            let mem = self.memory.as_mut().ok_or(PartitionError::Stopped)?;
            if !image::write_boot_info(mem, &info) {
                return Err(PartitionError::TooSmall);
            }
            let entry = EntryState {
                rip: self.entry,
                rsp: guest::STACK_TOP - 8,
                rdi: guest::BOOT_INFO,
                cr3: guest::PAGE_TABLES,
            };
            self.vcpu.as_mut().ok_or(PartitionError::Stopped)?.enter_long_mode(&entry);
        }
        self.state = State::Paused;
        let start = crate::apic::ticks();
        let mut report =
            RunReport { stop: Stop::BudgetExhausted, exits: 0, ticks: 0, hypercalls: 0 };
        loop {
            let vcpu = self.vcpu.as_mut().ok_or(PartitionError::Stopped)?;
            let exit = vcpu.run();
            report.exits += 1;
            let stop = match exit {
                VmExit::HostInterrupt => None,
                VmExit::Io { port, size: 4, write: true, string: false, next_rip }
                    if port == guest::HYPERCALL_PORT =>
                {
                    report.hypercalls += 1;
                    self.vcpu.as_mut().ok_or(PartitionError::Stopped)?.set_rip(next_rip);
                    self.hypercall()
                }
                VmExit::Hypercall { next_rip } => {
                    report.hypercalls += 1;
                    self.vcpu.as_mut().ok_or(PartitionError::Stopped)?.set_rip(next_rip);
                    self.hypercall()
                }
                VmExit::Io { port, .. } => {
                    Some(Stop::UnhandledIo { port, rip: vcpu.reg(Reg::Rip) })
                }
                VmExit::Halt => Some(Stop::Halted),
                VmExit::Shutdown => Some(Stop::Shutdown),
                VmExit::Exception { vector, rip, .. } => Some(Stop::Exception { vector, rip }),
                VmExit::NestedPageFault { gpa, rip, .. } => {
                    Some(Stop::NestedPageFault { gpa, rip })
                }
                VmExit::Msr { rip } => Some(Stop::Unsupported { rip }),
                VmExit::InvalidState => Some(Stop::InvalidState),
                VmExit::Other { code, .. } => Some(Stop::UnknownExit(code)),
            };
            report.ticks = crate::apic::ticks().wrapping_sub(start);
            if let Some(stop) = stop {
                report.stop = stop;
                self.state = State::Stopped;
                return Ok(report);
            }
            if report.ticks > budget.ticks || report.exits > budget.exits {
                return Ok(report);
            }
        }
    }

    /// Serves one hypercall (registers per `guest::op`); `Some` ends the run.
    fn hypercall(&mut self) -> Option<Stop> {
        let vcpu = self.vcpu.as_ref()?;
        let (op, a, b) = (vcpu.reg(Reg::Rax) as u32, vcpu.reg(Reg::Rcx), vcpu.reg(Reg::Rsi));
        let rip = vcpu.reg(Reg::Rip);
        match op {
            guest::op::DONE => Some(Stop::Done(a)),
            guest::op::REPORT => {
                log::debug!("partition {}: report {} = {:#x}", self.name, a, b);
                self.reports.push((a, b));
                None
            }
            guest::op::LOG => {
                let mut buf = [0u8; 256];
                let n = (b as usize).min(buf.len());
                let got = self.memory.as_ref().map_or(0, |m| m.read(a, &mut buf[..n]));
                let text = String::from_utf8_lossy(&buf[..got]).into_owned();
                log::info!("partition {}: guest says: {}", self.name, text);
                self.messages.push(text);
                None
            }
            _ => Some(Stop::Unsupported { rip }),
        }
    }

    /// Stops the partition for good: it will not run again (its vCPU is not running
    /// when this is called: one CPU, runs are synchronous).
    pub fn stop(&mut self) {
        self.state = State::Stopped;
    }

    /// The teardown hook that runs after the vCPU is gone and before guest memory is
    /// scrubbed and returned. Phase 2 (IOMMU) fills it in, in this order, for each
    /// assigned device: bus mastering off, in-flight DMA drained or timed out, detach
    /// from the domain, the DMA mappings torn down with their invalidations completed.
    /// An error keeps the memory out of the allocator (leaked, never reused) because a
    /// device might still write it.
    pub fn before_memory_release(&mut self) -> Result<(), String> {
        for d in &self.devices {
            log::debug!(
                "partition {}: device {d}: nothing to detach yet (no IOMMU attach)",
                self.name
            );
        }
        Ok(())
    }

    /// Stops the vCPU, runs [`Partition::before_memory_release`], frees the nested tables
    /// and scrubs guest memory; returns the scrubbed memory, or `None` when the hook
    /// refused (the memory is then deliberately leaked).
    fn teardown(&mut self) -> Option<GuestMemory> {
        self.stop();
        self.vcpu = None;
        let hook = self.before_memory_release();
        self.npt = None;
        let mut mem = self.memory.take()?;
        if let Err(e) = hook {
            log::error!(
                "partition {}: teardown failed ({e}): its memory is kept out of use",
                self.name
            );
            core::mem::forget(mem);
            return None;
        }
        mem.scrub();
        Some(mem)
    }

    /// Destroys the partition: teardown, scrub, and every frame back to the allocator.
    /// Returns the bytes returned.
    pub fn destroy(mut self) -> u64 {
        match self.teardown() {
            Some(mut mem) => {
                let size = mem.size();
                mem.release();
                size
            }
            None => 0,
        }
    }

    /// Destroys the partition but keeps its (scrubbed) memory for
    /// [`Partition::create_in`], which is how a re-created partition gets the same frames.
    pub fn destroy_keeping_memory(mut self) -> Option<GuestMemory> {
        self.teardown()
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if self.memory.is_some() {
            if let Some(mut mem) = self.teardown() {
                mem.release();
            }
        }
    }
}
