//! VT-d interrupt remapping: the interrupt remapping table (IRT), its 128-bit entries
//! (IRTEs), the interrupt-entry-cache invalidation, and the unit's IR bring-up and hand-off.
//!
//! With IRE set, a device's write to 0xFEE0_0000-0xFEEF_FFFF is an interrupt *request*
//! that names an IRTE by handle (remappable format) and gets only what that entry says:
//! its vector, its destination, and only if the request's source id matches the entry's
//! SID (SVT = 1, SQ = 0). A request in the old compatibility format is blocked, because
//! this driver never sets GCMD.CFI (and says so when firmware left it set). Entries are
//! changed only with an interrupt-entry-cache invalidation (queued descriptor type 4)
//! after the write, so the unit never answers from a stale cached entry.
//!
//! The interrupt entry cache can only be invalidated through the invalidation queue
//! (there is no register for it), so a unit run with register-based invalidation gets no
//! interrupt remapping at all: [`VtdUnit::interrupt_remapping`] then says why, and the
//! kernel refuses device assignment on it.

use crate::bits::Field;
use crate::error::HwError;
use crate::platform::{FrameAllocator, Mmio, PhysAddr, PhysMemory, PAGE_SIZE};

use super::invalidation::Descriptor;
use super::regs;
use super::unit::{InvalidationMode, VtdUnit};

/// IRTEs in the table: one 4 KiB page of 16-byte entries.
pub const IRT_ENTRIES: u16 = 256;
/// IRTA.S: the table holds 2^(S + 1) entries.
const IRTA_SIZE: Field = Field::new(0, 4);
/// IRTA.EIME: extended (x2APIC) interrupt mode, 32-bit destination ids.
const IRTA_EIME: Field = Field::bit(11);
/// IRTA: table base, bits 63:12.
const IRTA_ADDRESS: Field = Field::new(12, 52);

/// IRTE low qword: present.
const IRTE_P: Field = Field::bit(0);
/// IRTE: fault processing disable (left 0: every refused request is recorded).
const IRTE_FPD: Field = Field::bit(1);
/// IRTE: destination mode (0 = physical APIC id).
const IRTE_DM: Field = Field::bit(2);
/// IRTE: delivery mode (0 = fixed).
const IRTE_DLM: Field = Field::new(5, 3);
/// IRTE: IRTE mode (0 = remapped, 1 = posted).
const IRTE_IM: Field = Field::bit(15);
/// IRTE: the vector delivered.
const IRTE_VECTOR: Field = Field::new(16, 8);
/// IRTE: destination id; in xAPIC mode the APIC id sits in bits 15:8 of this field.
const IRTE_DST: Field = Field::new(32, 32);
/// IRTE high qword: the source id requests must carry.
const IRTE_SID: Field = Field::new(0, 16);
/// IRTE: source-id qualifier (0 = compare all 16 bits).
const IRTE_SQ: Field = Field::new(16, 2);
/// IRTE: source validation type (1 = verify the requester id against SID/SQ).
const IRTE_SVT: Field = Field::new(18, 2);
/// SVT value: verify the request's requester id.
const SVT_REQUESTER_ID: u64 = 1;

/// Interrupt-entry-cache invalidate descriptor (type 4): granularity (1 = index selective).
const IEC_INDEX_SELECTIVE: Field = Field::bit(4);
/// IEC descriptor: index mask (log2 of the entries covered).
const IEC_IM: Field = Field::new(27, 5);
/// IEC descriptor: first interrupt index.
const IEC_IIDX: Field = Field::new(32, 16);
/// Descriptor type: interrupt entry cache invalidate.
pub const DESC_IEC: u64 = 4;

/// Remappable-format MSI address: bit 4 (Interrupt Format) = 1.
const MSI_ADDR_REMAPPABLE: Field = Field::bit(4);
/// Remappable-format MSI address: handle bits 14:0.
const MSI_ADDR_HANDLE_LO: Field = Field::new(5, 15);
/// Remappable-format MSI address: handle bit 15.
const MSI_ADDR_HANDLE_HI: Field = Field::bit(2);
/// The interrupt window every MSI address lies in.
pub const MSI_WINDOW_BASE: u64 = 0xFEE0_0000;

/// One interrupt remapping table entry as two qwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Irte {
    /// Bits 63:0 (P, modes, vector, destination).
    pub lo: u64,
    /// Bits 127:64 (SID, SQ, SVT).
    pub hi: u64,
}

impl Irte {
    /// A present entry delivering `vector` (fixed, edge, physical destination) to the local
    /// APIC `apic_id`, answering only requests whose requester id is `source`. `x2apic`
    /// selects the 32-bit destination format (EIME); in xAPIC format the id must fit 8 bits.
    pub fn remapped(vector: u8, apic_id: u32, x2apic: bool, source: u16) -> Result<Self, HwError> {
        let dst = if x2apic {
            u64::from(apic_id)
        } else if apic_id <= 0xFF {
            u64::from(apic_id) << 8
        } else {
            return Err(HwError::Unsupported {
                what: "an APIC id above 255 in xAPIC interrupt format",
            });
        };
        let lo = IRTE_P.encode(1)
            | IRTE_FPD.encode(0)
            | IRTE_DM.encode(0)
            | IRTE_DLM.encode(0)
            | IRTE_IM.encode(0)
            | IRTE_VECTOR.encode(u64::from(vector))
            | IRTE_DST.encode(dst);
        let hi = IRTE_SID.encode(u64::from(source))
            | IRTE_SQ.encode(0)
            | IRTE_SVT.encode(SVT_REQUESTER_ID);
        Ok(Irte { lo, hi })
    }

    /// Whether the entry is present.
    pub fn present(&self) -> bool {
        IRTE_P.is_set(self.lo)
    }
    /// The vector the entry delivers.
    pub fn vector(&self) -> u8 {
        IRTE_VECTOR.get(self.lo) as u8
    }
    /// The requester id the entry answers (when [`verifies_source`](Self::verifies_source)).
    pub fn source_id(&self) -> u16 {
        IRTE_SID.get(self.hi) as u16
    }
    /// Whether the unit checks the requester id against SID with all 16 bits compared.
    pub fn verifies_source(&self) -> bool {
        IRTE_SVT.get(self.hi) == SVT_REQUESTER_ID && IRTE_SQ.get(self.hi) == 0
    }
}

/// The MSI address and data a device must use to raise the interrupt of IRTE `handle`
/// (remappable format, no sub-handle, data 0).
pub fn remappable_msi(handle: u16) -> (u64, u32) {
    let h = u64::from(handle);
    let address = MSI_WINDOW_BASE
        | MSI_ADDR_REMAPPABLE.encode(1)
        | MSI_ADDR_HANDLE_LO.encode(h)
        | MSI_ADDR_HANDLE_HI.encode(h >> 15);
    (address, 0)
}

impl Descriptor {
    /// Interrupt-entry-cache invalidation: every entry (`None`) or the `2^mask` entries
    /// from `index` (index-selective).
    pub fn iec(what: Option<(u16, u8)>) -> Self {
        let lo = match what {
            None => DESC_IEC,
            Some((index, mask)) => {
                DESC_IEC
                    | IEC_INDEX_SELECTIVE.encode(1)
                    | IEC_IM.encode(u64::from(mask))
                    | IEC_IIDX.encode(u64::from(index))
            }
        };
        Descriptor { lo, hi: 0 }
    }
}

/// The table: one zeroed frame (every entry not present) until entries are installed.
#[derive(Debug)]
pub struct InterruptRemapTable {
    base: PhysAddr,
    coherent: bool,
}

impl InterruptRemapTable {
    /// Allocates an empty table (every entry not present).
    pub fn new<P: FrameAllocator>(mem: &mut P, coherent: bool) -> Result<Self, HwError> {
        let base = mem.alloc_zeroed_frame().ok_or(HwError::OutOfMemory)?;
        Ok(Self { base, coherent })
    }
    /// Physical address of entry 0.
    pub fn base(&self) -> PhysAddr {
        self.base
    }
    /// The IRTA register value: base, EIME for x2APIC, S for 256 entries.
    pub fn irta_value(&self, x2apic: bool) -> u64 {
        IRTA_ADDRESS.encode(self.base >> 12)
            | IRTA_EIME.encode(u64::from(x2apic))
            | IRTA_SIZE.encode(u64::from(IRT_ENTRIES.trailing_zeros() - 1))
    }
    /// Reads entry `index`.
    pub fn read(&self, mem: &impl PhysMemory, index: u16) -> Option<Irte> {
        let at = self.entry_address(index)?;
        Some(Irte { lo: mem.read_u64(at), hi: mem.read_u64(at + 8) })
    }
    /// Writes entry `index`: the high qword first, the low one (with P) last, so the unit
    /// never sees a present entry with a stale source id.
    fn write(&self, mem: &mut impl PhysMemory, index: u16, entry: Irte) -> Result<(), HwError> {
        let at = self
            .entry_address(index)
            .ok_or(HwError::Unsupported { what: "an interrupt index beyond the table" })?;
        mem.write_u64(at, 0);
        mem.write_u64(at + 8, entry.hi);
        mem.write_u64(at, entry.lo);
        if !self.coherent {
            mem.flush_for_device(at, 16);
        }
        Ok(())
    }
    fn entry_address(&self, index: u16) -> Option<PhysAddr> {
        (index < IRT_ENTRIES).then(|| self.base + 16 * u64::from(index))
    }
    /// Frees the frame (only once the unit no longer points at it).
    pub fn free<P: FrameAllocator>(self, mem: &mut P) {
        mem.free_frame(self.base);
    }
}

const _: () = assert!(16 * IRT_ENTRIES as u64 == PAGE_SIZE);

/// What bring-up found of interrupt remapping left behind by firmware or a previous kernel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrHandoff {
    /// IRE was set and has been turned off (IRES polled clear) before reprogramming.
    pub was_enabled: bool,
    /// GCMD.CFI was set (compatibility-format interrupts passed): it has been cleared.
    pub compatibility_format_was_allowed: bool,
}

/// Whether and how the unit remaps interrupts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrState {
    /// Remapping on: every interrupt request goes through the table, compatibility format
    /// blocked.
    Enabled {
        /// IRTA.EIME (32-bit x2APIC destinations).
        x2apic: bool,
    },
    /// Remapping off, with the reason in words.
    Unavailable(&'static str),
}

impl<R: Mmio, P: FrameAllocator + PhysMemory> VtdUnit<R, P> {
    /// Whether interrupt remapping is on, or why not.
    pub fn interrupt_remapping(&self) -> IrState {
        self.ir_state
    }

    /// What bring-up found left on by firmware (for the boot log's warnings).
    pub fn ir_handoff(&self) -> IrHandoff {
        self.ir_handoff
    }

    /// Turns off whatever interrupt remapping firmware left on (IRE off, IRES polled clear)
    /// and clears CFI, recording both in [`ir_handoff`](Self::ir_handoff). Part of enable.
    pub(super) fn take_down_firmware_ir(&mut self) -> Result<(), HwError> {
        let gsts = self.mmio.read32(regs::GSTS);
        if gsts & regs::GSTS_IRES != 0 {
            self.ir_handoff.was_enabled = true;
            self.set_persistent(regs::GCMD_IRE, false);
            self.wait_status(
                regs::GSTS_IRES,
                false,
                "GSTS.IRES clear (firmware left interrupt remapping on)",
            )?;
        }
        if self.mmio.read32(regs::GSTS) & regs::GSTS_CFIS != 0 {
            self.ir_handoff.compatibility_format_was_allowed = true;
            self.set_persistent(regs::GCMD_CFI, false);
            self.wait_status(
                regs::GSTS_CFIS,
                false,
                "GSTS.CFIS clear (compatibility-format interrupts blocked)",
            )?;
        }
        self.ir_state = IrState::Unavailable("not enabled yet");
        Ok(())
    }

    /// Turns interrupt remapping on, once the queue runs: IRTA (empty table, EIME off: the
    /// kernel runs its local APICs in xAPIC mode), SIRTP and IRTPS, a global
    /// interrupt-entry-cache invalidation and wait, then IRE and IRES. Without ECAP.IR, or
    /// in register-based invalidation mode, remapping stays off and the state says why.
    pub(super) fn enable_interrupt_remapping(&mut self) -> Result<(), HwError> {
        if !self.ecap.interrupt_remapping() {
            self.ir_state = IrState::Unavailable("the unit has no interrupt remapping (ECAP.IR)");
            return Ok(());
        }
        if self.mode != InvalidationMode::Queued || !self.queue_on {
            self.ir_state = IrState::Unavailable(
                "register-based invalidation cannot invalidate the interrupt entry cache \
                 (only a queued descriptor can), so interrupt remapping stays off",
            );
            return Ok(());
        }
        if self.irt.is_none() {
            self.irt = Some(InterruptRemapTable::new(&mut self.mem, self.ecap.coherent())?);
        }
        let Some(irta) = self.irt.as_ref().map(|t| t.irta_value(false)) else {
            return Err(HwError::OutOfMemory);
        };
        self.mmio.write64(regs::IRTA, irta);
        self.one_shot(regs::GCMD_SIRTP);
        self.wait_status(regs::GSTS_IRTPS, true, "GSTS.IRTPS set")?;
        self.invalidate_interrupt_entries(None)?;
        self.sync_invalidations()?;
        self.set_persistent(regs::GCMD_IRE, true);
        self.wait_status(regs::GSTS_IRES, true, "GSTS.IRES set")?;
        if self.mmio.read32(regs::GSTS) & regs::GSTS_CFIS != 0 {
            return Err(HwError::Unsupported {
                what: "blocking compatibility-format interrupts (GSTS.CFIS stays set)",
            });
        }
        self.ir_state = IrState::Enabled { x2apic: false };
        Ok(())
    }

    /// Turns interrupt remapping off (IRE clear, IRES polled): every interrupt request
    /// then passes as the device wrote it. For shutdown and for the tests' control runs.
    pub fn disable_interrupt_remapping(&mut self) -> Result<(), HwError> {
        self.set_persistent(regs::GCMD_IRE, false);
        self.wait_status(regs::GSTS_IRES, false, "GSTS.IRES clear")?;
        self.ir_state = IrState::Unavailable("turned off");
        Ok(())
    }

    /// Turns remapping back on after [`disable_interrupt_remapping`]
    /// (Self::disable_interrupt_remapping), with the same table.
    pub fn reenable_interrupt_remapping(&mut self) -> Result<(), HwError> {
        self.enable_interrupt_remapping()
    }

    /// Queues an interrupt-entry-cache invalidation (type 4 descriptor): all entries or
    /// the `2^mask` from `index`. Runs by the next sync.
    fn invalidate_interrupt_entries(&mut self, what: Option<(u16, u8)>) -> Result<(), HwError> {
        let Some(queue) = self.queue.as_mut().filter(|_| self.queue_on) else {
            return Err(HwError::Unsupported {
                what: "interrupt-entry-cache invalidation without the invalidation queue",
            });
        };
        self.counts.interrupt_entries += 1;
        queue.submit(&mut self.mmio, &mut self.mem, Descriptor::iec(what))
    }

    /// Physical address of the interrupt remapping table, once allocated.
    pub fn irt_address(&self) -> Option<PhysAddr> {
        self.irt.as_ref().map(InterruptRemapTable::base)
    }

    /// The entry at `index` as the unit would read it.
    pub fn irte(&self, index: u16) -> Option<Irte> {
        self.irt.as_ref()?.read(&self.mem, index)
    }

    /// Installs `entry` at `index` (a present entry is cleared and invalidated first),
    /// then invalidates that index in the interrupt entry cache and waits.
    pub fn set_irte(&mut self, index: u16, entry: Irte) -> Result<(), HwError> {
        if !matches!(self.ir_state, IrState::Enabled { .. }) {
            return Err(HwError::Unsupported { what: "IRTE changes with remapping off" });
        }
        let table = self
            .irt
            .as_ref()
            .ok_or(HwError::Unsupported { what: "no interrupt remapping table" })?;
        if table.read(&self.mem, index).is_some_and(|old| old.present()) {
            table.write(&mut self.mem, index, Irte::default())?;
            self.invalidate_interrupt_entries(Some((index, 0)))?;
            self.sync_invalidations()?;
        }
        let table = self
            .irt
            .as_ref()
            .ok_or(HwError::Unsupported { what: "no interrupt remapping table" })?;
        table.write(&mut self.mem, index, entry)?;
        self.invalidate_interrupt_entries(Some((index, 0)))?;
        self.sync_invalidations()
    }

    /// Makes entry `index` not present and invalidates it (requests naming it then fault
    /// with reason 0x22).
    pub fn clear_irte(&mut self, index: u16) -> Result<(), HwError> {
        self.set_irte(index, Irte::default())
    }
}
