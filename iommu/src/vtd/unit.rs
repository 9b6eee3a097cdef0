//! One VT-d remapping unit (a DRHD): bring-up, device attach/detach and invalidation.

use alloc::string::String;
use alloc::vec::Vec;

use crate::error::HwError;
use crate::invalidate::DomainId;
use crate::pgtable::vtd::VtdFormat;
use crate::platform::{FrameAllocator, Mmio, PhysAddr, PhysMemory};

use super::context::ContextEntry;
use super::fault::FaultCounters;
use super::invalidation::{
    poll, ContextInvalidation, InvalidationQueue, IotlbInvalidation, RegisterInvalidation,
};
use super::irq_remap::{InterruptRemapTable, IrHandoff, IrState};
use super::regs::{self, Cap, Ecap};
use super::root_table::RootTable;

/// How the unit is told to forget cached translations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationMode {
    /// Descriptors through the invalidation queue (needs ECAP.QI).
    Queued,
    /// The CCMD and IOTLB registers.
    Register,
}

/// How many invalidations of each kind the unit has issued (for logs and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvalidationCounts {
    /// Context-cache invalidations of any granularity.
    pub context: u64,
    /// Global IOTLB invalidations.
    pub iotlb_global: u64,
    /// Domain-selective IOTLB invalidations.
    pub iotlb_domain: u64,
    /// Page-selective IOTLB invalidations.
    pub iotlb_page: u64,
    /// Wait descriptors (queued mode only).
    pub waits: u64,
    /// Write-buffer flushes (CAP.RWBF units only).
    pub write_buffer_flushes: u64,
    /// Interrupt-entry-cache invalidations (queued descriptor type 4).
    pub interrupt_entries: u64,
}

/// A VT-d remapping unit: owns its register window `R` and a handle `P` to the memory its
/// tables and queue live in.
pub struct VtdUnit<R: Mmio, P: FrameAllocator + PhysMemory> {
    pub(super) mmio: R,
    pub(super) mem: P,
    pub(super) ver: u32,
    pub(super) cap: Cap,
    pub(super) ecap: Ecap,
    pub(super) levels: u32,
    pub(super) mode: InvalidationMode,
    pub(super) queue: Option<InvalidationQueue>,
    pub(super) queue_on: bool,
    pub(super) registers: RegisterInvalidation,
    pub(super) root: RootTable,
    pub(super) enabled: bool,
    pub(super) fault_msi: Option<(u8, u32)>,
    pub(super) faults: FaultCounters,
    pub(super) counts: InvalidationCounts,
    pub(super) handoff: super::handoff::HandOff,
    pub(super) irt: Option<InterruptRemapTable>,
    pub(super) ir_state: IrState,
    pub(super) ir_handoff: IrHandoff,
    pub(super) handoff_quirks: super::handoff::Quirks,
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> VtdUnit<R, P> {
    /// Reads VER/CAP/ECAP, picks the table depth (4-level when SAGAW allows, else 3-level)
    /// and allocates an empty root table. Touches no control register.
    pub fn new(mmio: R, mut mem: P) -> Result<Self, HwError> {
        let ver = mmio.read32(regs::VER);
        let cap = Cap(mmio.read64(regs::CAP));
        let ecap = Ecap(mmio.read64(regs::ECAP));
        let levels = if cap.supports_levels(4) {
            4
        } else if cap.supports_levels(3) {
            3
        } else {
            return Err(HwError::Unsupported {
                what: "3- or 4-level second-level tables (CAP.SAGAW)",
            });
        };
        let mode = if ecap.queued_invalidation() {
            InvalidationMode::Queued
        } else {
            InvalidationMode::Register
        };
        let root = RootTable::new(&mut mem, ecap.coherent())?;
        // Read once more so a window that fails every read (all ones) is not mistaken
        // for a unit with every capability: VER's reserved bits 31:8 are zero.
        if mmio.read32(regs::VER) >> 8 != 0 {
            root.free(&mut mem);
            return Err(HwError::Unsupported {
                what: "a VT-d register window (VER reads garbage)",
            });
        }
        Ok(VtdUnit {
            registers: RegisterInvalidation::new(ecap.iotlb_register_offset()),
            mmio,
            mem,
            ver,
            cap,
            ecap,
            levels,
            mode,
            queue: None,
            queue_on: false,
            root,
            enabled: false,
            fault_msi: None,
            faults: FaultCounters::default(),
            counts: InvalidationCounts::default(),
            handoff: Default::default(),
            irt: None,
            ir_state: IrState::Unavailable("not enabled yet"),
            ir_handoff: IrHandoff::default(),
            handoff_quirks: Default::default(),
        })
    }

    /// Chooses the invalidation mechanism; only before [`enable`](Self::enable).
    pub fn set_invalidation_mode(&mut self, mode: InvalidationMode) -> Result<(), HwError> {
        if self.enabled {
            return Err(HwError::Unsupported {
                what: "changing the invalidation mode after enable",
            });
        }
        if mode == InvalidationMode::Queued && !self.ecap.queued_invalidation() {
            return Err(HwError::Unsupported { what: "queued invalidation (ECAP.QI)" });
        }
        self.mode = mode;
        Ok(())
    }

    /// [`set_invalidation_mode`](Self::set_invalidation_mode) in builder form, for
    /// `VtdUnit::new(..)?.with_invalidation_mode(..)?`.
    pub fn with_invalidation_mode(mut self, mode: InvalidationMode) -> Result<Self, HwError> {
        self.set_invalidation_mode(mode)?;
        Ok(self)
    }

    /// Overrides the table depth picked at construction (for example 3-level on a unit
    /// that also offers 4-level); only before enable, and only a depth SAGAW offers.
    pub fn set_levels(&mut self, levels: u32) -> Result<(), HwError> {
        if self.enabled {
            return Err(HwError::Unsupported { what: "changing the table depth after enable" });
        }
        if !(3..=4).contains(&levels) || !self.cap.supports_levels(levels) {
            return Err(HwError::Unsupported { what: "this table depth (CAP.SAGAW)" });
        }
        self.levels = levels;
        Ok(())
    }

    /// The invalidation mechanism in use (or to be used at enable).
    pub fn invalidation_mode(&self) -> InvalidationMode {
        self.mode
    }
    /// Second-level table depth domains attached to this unit must use (3 or 4).
    pub fn levels(&self) -> u32 {
        self.levels
    }
    /// Usable IOVA width in bits: the table depth's width, capped by CAP.MGAW.
    pub fn address_width(&self) -> u32 {
        (30 + 9 * (self.levels - 2)).min(self.cap.mgaw_bits())
    }
    /// The second-level format new domains must use: this unit's depth, CAP.SLLPS
    /// superpages and the IOVA width capped by CAP.MGAW.
    pub fn domain_format(&self) -> Result<VtdFormat, HwError> {
        VtdFormat::new(self.levels, self.cap.sllps())
            .map(|f| f.with_address_width(self.address_width()))
            .ok_or(HwError::Unsupported { what: "page-table depth" })
    }
    /// CAP.CM: the unit may cache not-present entries, so maps need an invalidation too
    /// (call [`flush_after_map`](Self::flush_after_map)).
    pub fn caching_mode(&self) -> bool {
        self.cap.caching_mode()
    }
    /// ECAP.C: table walks snoop CPU caches. When false, every table write must be flushed.
    pub fn coherent(&self) -> bool {
        self.ecap.coherent()
    }
    /// The raw capability registers.
    pub fn capabilities(&self) -> (Cap, Ecap) {
        (self.cap, self.ecap)
    }
    /// The version register (major in bits 7:4, minor in 3:0).
    pub fn version(&self) -> u32 {
        self.ver
    }
    /// Version and capabilities in words, one fact per line.
    pub fn describe(&self) -> Vec<String> {
        regs::describe(self.ver, self.cap, self.ecap)
    }
    /// Bytes of register window the driver touches (fault records and IOTLB registers may
    /// sit beyond the first page on some units).
    pub fn register_span(&self) -> usize {
        let faults = self.cap.fault_record_offset() + 16 * self.cap.fault_record_count();
        let iotlb = self.ecap.iotlb_register_offset() + 16;
        faults.max(iotlb).max(regs::IRTA + 8)
    }
    /// The register window (for the kernel's hand-off tests, which start a second driver
    /// instance on the same unit to play the previous owner or to take the unit over).
    pub fn registers(&self) -> &R {
        &self.mmio
    }
    /// Whether translation has been enabled by [`enable`](Self::enable).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
    /// Invalidations issued so far.
    pub fn invalidation_counts(&self) -> InvalidationCounts {
        self.counts
    }
    /// Physical address of the root table.
    pub fn root_table_address(&self) -> PhysAddr {
        self.root.address()
    }
    /// The context entry currently programmed for requester id `rid`.
    pub fn context_entry(&self, rid: u16) -> ContextEntry {
        self.root.context_entry(&self.mem, rid)
    }

    /// Writes GCMD with a persistent bit set or cleared, echoing the other persistent
    /// status bits and never a one-shot command.
    pub(super) fn set_persistent(&mut self, bit: u32, on: bool) {
        let current = self.mmio.read32(regs::GSTS) & regs::GSTS_PERSISTENT_MASK;
        let value = if on { current | bit } else { current & !bit };
        self.mmio.write32(regs::GCMD, value);
    }

    /// Issues a one-shot GCMD command alongside the current persistent state.
    pub(super) fn one_shot(&mut self, bit: u32) {
        let current = self.mmio.read32(regs::GSTS) & regs::GSTS_PERSISTENT_MASK;
        self.mmio.write32(regs::GCMD, current | bit);
    }

    pub(super) fn wait_status(
        &self,
        bit: u32,
        set: bool,
        what: &'static str,
    ) -> Result<(), HwError> {
        poll(|| (self.mmio.read32(regs::GSTS) & bit != 0) == set, what)
    }

    /// Brings the unit up: take over from firmware (TE off, interrupt remapping off and CFI
    /// cleared, then QIE off), RTADDR + SRTP, the chosen invalidation mechanism, global
    /// context and IOTLB invalidation, interrupt remapping (empty table: every interrupt
    /// request refused until an entry is installed), the fault interrupt if one was
    /// programmed, then TE. Every wait is bounded.
    pub fn enable(&mut self) -> Result<(), HwError> {
        if self.enabled {
            return Ok(());
        }
        // Firmware's state taken over without a moment of unrestricted DMA (handoff.rs):
        // translation, when on, stays on while the new root table is latched.
        let mut report = super::handoff::HandOff {
            translation_was_on: self.mmio.read32(regs::GSTS) & regs::GSTS_TES != 0,
            ..Default::default()
        };
        // Before the queue goes: IRE off first, so no request is answered from a table
        // firmware owns while the unit is reprogrammed.
        self.take_down_firmware_ir()?;
        self.take_over_queue(&mut report)?;
        self.handoff = report;
        self.mmio.write64(regs::RTADDR, self.root.address());
        self.one_shot(regs::GCMD_SRTP);
        self.wait_status(regs::GSTS_RTPS, true, "GSTS.RTPS set")?;
        self.flush_write_buffer()?;
        if self.mode == InvalidationMode::Queued {
            if self.queue.is_none() {
                self.queue = Some(InvalidationQueue::new(&mut self.mem)?);
            }
            if let Some(queue) = self.queue.as_mut() {
                queue.enable(&mut self.mmio)?;
                self.queue_on = true;
            }
        }
        self.invalidate_context(ContextInvalidation::Global)?;
        self.invalidate_iotlb(IotlbInvalidation::Global)?;
        self.sync_invalidations()?;
        self.enable_interrupt_remapping()?;
        if let Some((vector, apic_id)) = self.fault_msi {
            self.program_fault_interrupt(vector, apic_id)?;
        }
        if !report.translation_was_on {
            self.set_persistent(regs::GCMD_TE, true);
        }
        self.wait_status(regs::GSTS_TES, true, "GSTS.TES set")?;
        self.enabled = true;
        self.disable_protected_regions(&mut report)?;
        self.handoff = report;
        Ok(())
    }

    /// Takes the unit over again as if someone else (firmware, a previous kernel) had left
    /// it running: the whole [`enable`](Self::enable) sequence, hand-off included, with
    /// this driver's tables. For the hand-off tests; every wait is bounded.
    pub fn take_over(&mut self) -> Result<(), HwError> {
        self.enabled = false;
        self.enable()
    }

    /// Turns translation off, then (after draining what is queued) the invalidation
    /// queue; DMA is untranslated afterwards.
    pub fn disable(&mut self) -> Result<(), HwError> {
        self.sync_invalidations()?;
        self.set_persistent(regs::GCMD_TE, false);
        self.wait_status(regs::GSTS_TES, false, "GSTS.TES clear")?;
        self.enabled = false;
        if matches!(self.ir_state, IrState::Enabled { .. }) {
            self.disable_interrupt_remapping()?;
        }
        if self.queue_on {
            self.set_persistent(regs::GCMD_QIE, false);
            self.wait_status(regs::GSTS_QIES, false, "GSTS.QIES clear")?;
            self.queue_on = false;
        }
        Ok(())
    }

    /// Points requester id `rid` at `domain`'s `levels`-deep tables rooted at `root`.
    /// A device already attached elsewhere is detached first (entry cleared and
    /// invalidated), so the unit never mixes old and new translations.
    pub fn attach_device(
        &mut self,
        rid: u16,
        domain: DomainId,
        root: PhysAddr,
        levels: u32,
    ) -> Result<(), HwError> {
        self.check_attach(domain, levels)?;
        self.install(rid, ContextEntry::translated(domain, root, levels))
    }

    /// Lets requester id `rid` DMA untranslated (TT = 2, needs ECAP.PT), tagged with
    /// `domain`; the entry still names a supported width, as the unit checks AW.
    pub fn attach_pass_through(&mut self, rid: u16, domain: DomainId) -> Result<(), HwError> {
        if !self.ecap.pass_through() {
            return Err(HwError::Unsupported { what: "pass-through translation (ECAP.PT)" });
        }
        self.check_attach(domain, self.levels)?;
        self.install(rid, ContextEntry::pass_through(domain, self.levels))
    }

    fn check_attach(&self, domain: DomainId, levels: u32) -> Result<(), HwError> {
        if !self.cap.supports_levels(levels) {
            return Err(HwError::Unsupported { what: "this table depth (CAP.SAGAW)" });
        }
        if u32::from(domain) >= self.cap.domain_count() {
            return Err(HwError::Unsupported { what: "a domain id this large (CAP.ND)" });
        }
        if domain == 0 && self.cap.caching_mode() {
            return Err(HwError::Unsupported { what: "domain id 0 (reserved when CAP.CM = 1)" });
        }
        Ok(())
    }

    /// Replaces `rid`'s context entry with `entry` (detaching first when it is present
    /// and different) and invalidates what the unit may have cached.
    fn install(&mut self, rid: u16, entry: ContextEntry) -> Result<(), HwError> {
        let domain = entry.domain();
        let old = self.context_entry(rid);
        if old == entry {
            return Ok(());
        }
        if old.present() {
            self.detach_device(rid)?;
        }
        self.root.set_context_entry(&mut self.mem, rid, entry)?;
        self.flush_write_buffer()?;
        if !self.enabled {
            return Ok(());
        }
        // A not-present entry is cached (by CM units) under domain id 0.
        let cached_as = if self.cap.caching_mode() { 0 } else { domain };
        self.invalidate_context(ContextInvalidation::Device { domain: cached_as, source: rid })?;
        self.invalidate_iotlb(IotlbInvalidation::Domain(domain))?;
        self.sync_invalidations()
    }

    /// Clears `rid`'s context entry, then invalidates its context-cache entry and the
    /// IOTLB of the domain it was in. Returns that domain, or `None` if it was not attached.
    pub fn detach_device(&mut self, rid: u16) -> Result<Option<DomainId>, HwError> {
        let old = self.context_entry(rid);
        if !old.present() {
            return Ok(None);
        }
        self.root.set_context_entry(&mut self.mem, rid, ContextEntry::default())?;
        self.flush_write_buffer()?;
        if self.enabled {
            self.invalidate_context(ContextInvalidation::Device {
                domain: old.domain(),
                source: rid,
            })?;
            self.invalidate_iotlb(IotlbInvalidation::Domain(old.domain()))?;
            self.sync_invalidations()?;
        }
        Ok(Some(old.domain()))
    }
}
