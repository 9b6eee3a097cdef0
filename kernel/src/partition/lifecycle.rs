//! The partition lifecycle after creation: run (the exit loop and hypercalls, bounded by a
//! budget), stop, and the ordered teardown that ends in scrubbed memory.
#![deny(unsafe_code)]

use super::dma::DmaTeardown;
use super::memory::GuestMemory;
use super::platform::delivery::{platform_offer, set_in_result, wait_for_interrupt, Devices};
use super::platform::{emulate_access, GuestPlatform, PortDevice};
use super::vcpu::{EntryState, Reg, VmExit};
use super::{image, Budget, Partition, PartitionError, RunReport, State, Stop};
use crate::iommu::IommuSystem;
use crate::mem::frames;
use alloc::string::String;
use iommu::tracker::HostExtent;

/// The guest's configuration-space ports (PCI mechanism #1).
pub(super) fn is_config_port(port: u16) -> bool {
    port == super::interrupts::CONFIG_ADDRESS
        || (super::interrupts::CONFIG_DATA..super::interrupts::CONFIG_DATA + 4).contains(&port)
}

/// Reports and messages kept per run: a guest cannot grow host memory without bound.
const MAX_KEPT: usize = 4096;

impl Partition {
    /// Runs the guest until it reports done, halts, faults, or `budget` runs out.
    /// A finished guest (anything but an exhausted budget) leaves the partition stopped.
    pub fn run(&mut self, budget: Budget) -> Result<RunReport, PartitionError> {
        self.run_with(budget, &mut || {})
    }

    /// As [`Partition::run`], calling `after_hypercall` after each hypercall was served
    /// and after each exit a host interrupt caused (the IOMMU fault service runs there:
    /// see `partition::isolation::run_serviced`).
    pub fn run_with(
        &mut self,
        budget: Budget,
        after_hypercall: &mut dyn FnMut(),
    ) -> Result<RunReport, PartitionError> {
        if self.state == State::Stopped {
            return Err(PartitionError::Stopped);
        }
        if self.state == State::Ready && self.linux.is_some() {
            // The 64-bit boot protocol: RSI = zero page, the boot GDT loaded.
            let entry = EntryState {
                rip: self.entry,
                rsp: 0,
                rdi: 0,
                rsi: super::linux::ZERO_PAGE,
                boot_gdt: Some(super::linux::GDT),
                cr3: guest::PAGE_TABLES,
            };
            self.vcpu.as_mut().ok_or(PartitionError::Stopped)?.enter_long_mode(&entry);
        } else if self.state == State::Ready {
            let info = self.boot_info();
            let mem = self.memory.as_mut().ok_or(PartitionError::Stopped)?;
            if !image::write_boot_info(mem, &info) {
                return Err(PartitionError::TooSmall);
            }
            let entry = EntryState {
                rip: self.entry,
                rsp: guest::STACK_TOP - 8,
                rdi: guest::BOOT_INFO,
                rsi: 0,
                boot_gdt: None,
                cr3: guest::PAGE_TABLES,
            };
            self.vcpu.as_mut().ok_or(PartitionError::Stopped)?.enter_long_mode(&entry);
        }
        self.state = State::Paused;
        let start = crate::apic::ticks();
        let mut report = RunReport {
            stop: Stop::BudgetExhausted,
            exits: 0,
            ticks: 0,
            hypercalls: 0,
            emulated: 0,
        };
        loop {
            let vcpu = self.vcpu.as_mut().ok_or(PartitionError::Stopped)?;
            if let Some(p) = self.platform.as_mut() {
                // With the platform, device MSIs go to the local APIC, which decides
                // (with the PIC) what the guest is offered before every entry.
                let devices = Devices {
                    msi: self.interrupt.as_mut(),
                    pci: self.linux.as_mut().map(|l| &mut l.pci),
                };
                platform_offer(p, devices, vcpu.as_mut());
            } else if let Some(d) = self.interrupt.as_mut() {
                if !vcpu.interrupt_waiting() {
                    if let Some(vector) = d.next_injection() {
                        vcpu.inject_interrupt(vector);
                    }
                }
            }
            let exit = vcpu.run();
            if let Some(p) = self.platform.as_mut() {
                if !vcpu.interrupt_waiting() {
                    p.taken();
                }
            }
            report.exits += 1;
            // A Linux guest's ports and MSRs go to its platform (`linux/mod.rs`).
            let served = self.serve_linux(&exit);
            let vcpu = self.vcpu.as_mut().ok_or(PartitionError::Stopped)?;
            let stop = match exit {
                _ if served.is_some() => served.flatten(),
                VmExit::HostInterrupt => {
                    after_hypercall();
                    None
                }
                VmExit::Io { port, size: 4, write: true, string: false, next_rip }
                    if port == guest::HYPERCALL_PORT =>
                {
                    report.hypercalls += 1;
                    self.vcpu.as_mut().ok_or(PartitionError::Stopped)?.set_rip(next_rip);
                    let stop = self.hypercall();
                    after_hypercall();
                    stop
                }
                VmExit::Hypercall { next_rip } => {
                    report.hypercalls += 1;
                    self.vcpu.as_mut().ok_or(PartitionError::Stopped)?.set_rip(next_rip);
                    let stop = self.hypercall();
                    after_hypercall();
                    stop
                }
                VmExit::Io { port, size, write, string: false, next_rip }
                    if is_config_port(port) =>
                {
                    // The guest's configuration space: its device's view when it has a
                    // routed device interrupt, else no device (reads all ones).
                    let value = vcpu.reg(Reg::Rax) as u32;
                    vcpu.set_rip(next_rip);
                    let d = self.interrupt.as_mut();
                    if write {
                        if let Some(d) = d {
                            d.io_write(port, size, value);
                        }
                    } else {
                        let read = d.map_or(u32::MAX, |d| d.io_read(port, size));
                        set_in_result(vcpu.as_mut(), size, read);
                    }
                    None
                }
                VmExit::Io { port, size, write, string: false, next_rip }
                    if self.platform.as_ref().is_some_and(|p| p.claims(port)) =>
                {
                    let value = vcpu.reg(Reg::Rax) as u32;
                    vcpu.set_rip(next_rip);
                    if let Some(p) = self.platform.as_mut() {
                        if write {
                            p.write(port, size, value);
                        } else {
                            let read = p.read(port, size);
                            set_in_result(vcpu.as_mut(), size, read);
                        }
                    }
                    None
                }
                VmExit::Io { port, .. } => {
                    Some(Stop::UnhandledIo { port, rip: vcpu.reg(Reg::Rip) })
                }
                VmExit::Halt if self.platform.is_some() && vcpu.control().interrupts_enabled() => {
                    // HLT with IF = 1 waits for the next virtual interrupt (the host
                    // sleeps between its own timer interrupts), bounded by the budget;
                    // RIP moves past the HLT only once one is deliverable, so a run that
                    // ends waiting resumes in the HLT.
                    if let Some(p) = self.platform.as_mut() {
                        let devices = Devices {
                            msi: self.interrupt.as_mut(),
                            pci: self.linux.as_mut().map(|l| &mut l.pci),
                        };
                        let woke = wait_for_interrupt(p, devices, start, budget);
                        if woke {
                            vcpu.skip_instruction();
                        }
                    }
                    None
                }
                VmExit::Halt => Some(Stop::Halted),
                VmExit::Shutdown => Some(Stop::Shutdown),
                VmExit::Exception { vector, rip, .. } => Some(Stop::Exception { vector, rip }),
                VmExit::NestedPageFault { gpa, .. }
                    if self.demand.as_ref().is_some_and(|d| d.covers(gpa)) =>
                {
                    // The demand page's first access: back it and resume the guest (an
                    // event whose delivery this interrupted is re-injected by the vCPU).
                    let delivering = vcpu.control().delivering_event;
                    let npt = self.npt.as_mut().ok_or(PartitionError::Stopped)?;
                    let page = self.demand.as_mut().ok_or(PartitionError::Stopped)?;
                    page.fault(npt, delivering)?;
                    vcpu.nested_tables_changed();
                    None
                }
                VmExit::NestedPageFault { gpa, error_code, rip }
                    if self.platform.as_ref().is_some_and(|p| p.claims_mmio(gpa)) =>
                {
                    let mem = self.memory.as_ref().ok_or(PartitionError::Stopped)?;
                    let p = self.platform.as_mut().ok_or(PartitionError::Stopped)?;
                    match p.emulate_mmio(vcpu.as_mut(), mem, gpa, error_code) {
                        Ok(()) => None,
                        Err(error) => {
                            log::warn!(
                                "partition {}: stopped: its access to {gpa:#x} (local APIC) at {rip:#x} was refused: {error}",
                                self.name
                            );
                            Some(Stop::MmioRefused { gpa, rip, error })
                        }
                    }
                }
                VmExit::NestedPageFault { gpa, error_code, rip }
                    if self.linux.as_ref().is_some_and(|l| l.pci.claims_mmio(gpa)) =>
                {
                    // A device's MSI-X table or PBA (trapped pages: `platform::msix`).
                    let mem = self.memory.as_ref().ok_or(PartitionError::Stopped)?;
                    let l = self.linux.as_mut().ok_or(PartitionError::Stopped)?;
                    match emulate_access(&mut l.pci, vcpu.as_mut(), mem, gpa, error_code) {
                        Ok(()) => None,
                        Err(error) => {
                            log::warn!(
                                "partition {}: stopped: its access to {gpa:#x} (MSI-X table) at {rip:#x} was refused: {error}",
                                self.name
                            );
                            Some(Stop::MmioRefused { gpa, rip, error })
                        }
                    }
                }
                VmExit::NestedPageFault { gpa, rip, .. } => {
                    Some(Stop::NestedPageFault { gpa, rip })
                }
                VmExit::Msr { rip, .. } => Some(Stop::Unsupported { rip }),
                VmExit::InvalidState => Some(Stop::InvalidState),
                VmExit::Emulated { .. } => {
                    report.emulated += 1;
                    None
                }
                VmExit::Refused { instruction, rip } => {
                    log::warn!(
                        "partition {}: stopped: the guest executed {instruction} at {rip:#x}, which partitions may not",
                        self.name
                    );
                    Some(Stop::Refused { instruction, rip })
                }
                VmExit::MachineCheck { rip } => {
                    log::error!(
                        "partition {}: stopped: a machine check arrived while it ran (guest RIP {rip:#x}); handed to the host's handler",
                        self.name
                    );
                    Some(Stop::MachineCheck { rip })
                }
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

    /// Serves one hypercall (registers per `guest::op`, decoded by
    /// `guest::hypercall::decode`); `Some` ends the run.
    fn hypercall(&mut self) -> Option<Stop> {
        use guest::hypercall::{Escaped, Hypercall};
        let vcpu = self.vcpu.as_ref()?;
        let rip = vcpu.reg(Reg::Rip);
        match guest::hypercall::decode(vcpu.reg(Reg::Rax), vcpu.reg(Reg::Rcx), vcpu.reg(Reg::Rsi)) {
            Hypercall::Done { status } => Some(Stop::Done(status)),
            Hypercall::Report { check, value } => {
                log::debug!("partition {}: report {} = {:#x}", self.name, check, value);
                // Guest-driven growth of host memory is bounded.
                if self.reports.len() < MAX_KEPT {
                    self.reports.push((check, value));
                }
                None
            }
            Hypercall::Log { gpa, len } => {
                let mut buf = [0u8; guest::hypercall::MAX_LOG as usize];
                let n = (len as usize).min(buf.len());
                let got = self.memory.as_ref().map_or(0, |m| m.read(gpa, &mut buf[..n]));
                // Guest text is data: quoted and escaped (`Escaped`) after the
                // partition's name, so it can never end the line or pass for one of the
                // hypervisor's own.
                log::info!("partition {}: guest says: \"{}\"", self.name, Escaped(&buf[..got]));
                if self.messages.len() < MAX_KEPT {
                    self.messages.push(String::from_utf8_lossy(&buf[..got]).into_owned());
                }
                None
            }
            Hypercall::Unknown(_) => Some(Stop::Unsupported { rip }),
        }
    }

    /// Stops the partition for good: it will not run again (its vCPU is not running
    /// when this is called: one CPU, runs are synchronous).
    pub fn stop(&mut self) {
        self.state = State::Stopped;
    }

    /// Starts the guest program again from its entry point with `scenario` (its image
    /// and memory as the last run left them; its devices stay attached; its platform, if
    /// any, back in its power-on state). Refused once teardown has begun.
    pub fn restart(&mut self, scenario: u64) -> Result<(), PartitionError> {
        // A Linux guest changed its memory: it starts again only by being re-created.
        if self.vcpu.is_none() || self.memory.is_none() || self.linux.is_some() {
            return Err(PartitionError::Stopped);
        }
        if self.platform.is_some() {
            // The platform restarts in its power-on state, as after a reset.
            self.platform = Some(GuestPlatform::on_host().map_err(PartitionError::Platform)?);
        }
        self.scenario = scenario;
        self.reports.clear();
        self.messages.clear();
        self.state = State::Ready;
        Ok(())
    }

    /// The teardown hook that runs after the vCPU is gone and before guest memory is
    /// returned: for assigned devices, bus mastering off, in-flight DMA drained or timed
    /// out, each device blocked, the DMA mappings torn down; every extent of guest memory
    /// is handed back by the tracker's release callback, which runs only after the
    /// invalidation covering it completed: returned dirty (the allocator zeroes it before
    /// any reuse, so the destroy does not wait for the scrub), or, when `keep`, scrubbed
    /// now for re-creation. On `Err` guest memory must never be reused (a device might
    /// still write it).
    fn before_memory_release(
        &mut self,
        mem: &mut GuestMemory,
        iommu: Option<&mut IommuSystem>,
        keep: bool,
        scrub_cycles: &mut u64,
    ) -> Result<Option<DmaTeardown>, PartitionError> {
        let Some(dma) = self.dma.take() else {
            let c0 = super::cycles();
            if keep {
                mem.scrub();
            } else {
                mem.release_dirty();
            }
            *scrub_cycles = super::cycles() - c0;
            return Ok(None);
        };
        let iommu = iommu.ok_or(PartitionError::IommuNotGiven)?;
        if let Some(l) = self.linux.as_mut() {
            l.pci.release(iommu, &self.name);
        }
        if let Some(mut d) = self.interrupt.take() {
            if let Some(routed) = d.release() {
                iommu.unroute_interrupt(routed).map_err(PartitionError::Interrupts)?;
            }
            log::info!(
                "partition {}: device interrupts: {} taken at the host vector, {} injected, {} dropped",
                self.name,
                d.taken(),
                d.injected,
                d.dropped
            );
        }
        let size = mem.size();
        let mut released = 0u64;
        let functions = dma.functions();
        let result = dma.teardown(iommu, &mut |e: HostExtent| {
            let c0 = super::cycles();
            if keep {
                frames::zero(e.paddr, e.len);
            } else {
                frames::free_dirty(e.paddr, e.len / 4096);
            }
            released += e.len;
            *scrub_cycles += super::cycles() - c0;
        });
        if !keep {
            // The callback returned what it released; the rest (on error) is leaked.
            mem.disown();
        }
        // Each device, quiesced and blocked, is reset before it can change owner (or
        // recorded as not resettable): `reset.rs`.
        for f in &functions {
            super::reset::released(f, &self.name);
        }
        let report = result?;
        if released != size {
            return Err(PartitionError::ReleaseMismatch { released, size });
        }
        Ok(Some(report))
    }

    /// Stops the vCPU, runs [`Partition::before_memory_release`] and frees the nested
    /// tables; returns the scrubbed memory when `keep` (else it went back to the
    /// allocator), or `Err` when teardown failed (the memory is then deliberately leaked).
    fn teardown(
        &mut self,
        iommu: Option<&mut IommuSystem>,
        keep: bool,
    ) -> Result<(Option<GuestMemory>, TeardownReport), PartitionError> {
        let c0 = super::cycles();
        self.stop();
        self.vcpu = None;
        if let Some(p) = self.platform.take() {
            log::info!(
                "partition {}: guest platform: {} PIC and {} local APIC vectors taken, {} APIC EOIs, {} PIT edges, {} MMIO and {} port accesses",
                self.name,
                p.stats.pic_taken,
                p.stats.lapic_taken,
                p.lapic.counts.eoi,
                p.stats.pit_edges,
                p.stats.mmio,
                p.stats.ports
            );
        }
        let Some(mut mem) = self.memory.take() else {
            return Ok((None, TeardownReport::default()));
        };
        let bytes = mem.size();
        let mut scrub_cycles = 0;
        let hook = self.before_memory_release(&mut mem, iommu, keep, &mut scrub_cycles);
        self.npt = None;
        match hook {
            Ok(dma) => {
                let cycles = super::cycles() - c0;
                let report = TeardownReport { bytes, dma, cycles, scrub_cycles };
                Ok((keep.then_some(mem), report))
            }
            Err(e) => {
                log::error!(
                    "partition {}: teardown failed ({e}): its memory is kept out of use",
                    self.name
                );
                mem.disown();
                Err(e)
            }
        }
    }

    /// Destroys a partition without assigned devices: teardown, scrub, and every frame
    /// back to the allocator. Returns the bytes returned (0 when teardown failed, for
    /// example because devices are attached: use [`Partition::destroy_in`]).
    pub fn destroy(mut self) -> u64 {
        self.teardown(None, false).map_or(0, |(_, r)| r.bytes)
    }

    /// Destroys the partition, detaching its devices from `iommu` first (see
    /// [`Partition::before_memory_release`]); every frame goes back to the allocator.
    pub fn destroy_in(mut self, iommu: &mut IommuSystem) -> Result<TeardownReport, PartitionError> {
        self.teardown(Some(iommu), false).map(|(_, r)| r)
    }

    /// Destroys the partition but keeps its (scrubbed) memory for
    /// [`Partition::create_in`], which is how a re-created partition gets the same frames.
    pub fn destroy_keeping_memory(mut self) -> Option<GuestMemory> {
        self.teardown(None, true).ok().and_then(|(m, _)| m)
    }

    /// As [`Partition::destroy_keeping_memory`], detaching devices from `iommu` first.
    pub fn destroy_keeping_memory_in(
        mut self,
        iommu: &mut IommuSystem,
    ) -> Result<(GuestMemory, TeardownReport), PartitionError> {
        let (mem, report) = self.teardown(Some(iommu), true)?;
        Ok((mem.ok_or(PartitionError::Stopped)?, report))
    }
}

/// What a destroy did and cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct TeardownReport {
    /// Guest memory scrubbed (and returned, or kept for re-creation).
    pub bytes: u64,
    /// The IOMMU side, when devices were assigned.
    pub dma: Option<DmaTeardown>,
    /// TSC cycles for the whole teardown (quiesce, block, unmap, flush, scrub, return).
    pub cycles: u64,
    /// The part of `cycles` spent returning memory (and scrubbing it, when kept for
    /// re-creation; otherwise it goes back dirty and is zeroed off this path).
    pub scrub_cycles: u64,
}

impl Drop for Partition {
    fn drop(&mut self) {
        if self.memory.is_some() {
            // Without the IOMMU at hand a partition with devices leaks its memory here.
            let _ = self.teardown(None, false);
        }
    }
}
