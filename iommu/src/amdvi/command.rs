//! Command encodings and the command buffer ring.
//!
//! A command is 128 bits (two little-endian quadwords) with the opcode in bits 63:60 of
//! the first. The IOMMU fetches commands from its head pointer up to the tail pointer the
//! driver writes; the only way to learn that commands have completed is a
//! COMPLETION_WAIT that stores a value to memory (QEMU's head register is not usable for
//! that: after a wrap it reads the buffer size instead of 0).

use crate::error::HwError;
use crate::invalidate::DomainId;
use crate::platform::{poll_until, Mmio, PhysAddr, PhysMemory, PAGE_SIZE, POLL_LIMIT};

use super::regs;
use crate::ring::{DescriptorRing, EntryVisibility, ENTRY_SIZE};

/// Bytes per command (the shared ring's entry size).
pub const COMMAND_SIZE: u64 = ENTRY_SIZE;
/// ComLen used by this driver: 2^8 = 256 commands, exactly one 4 KiB frame.
pub const COMMAND_LEN_LOG2: u64 = 8;

/// COMPLETION_WAIT opcode.
pub const OP_COMPLETION_WAIT: u8 = 0x1;
/// INVALIDATE_DEVTAB_ENTRY opcode.
pub const OP_INVALIDATE_DEVTAB_ENTRY: u8 = 0x2;
/// INVALIDATE_IOMMU_PAGES opcode.
pub const OP_INVALIDATE_IOMMU_PAGES: u8 = 0x3;
/// INVALIDATE_INTERRUPT_TABLE opcode.
pub const OP_INVALIDATE_INTERRUPT_TABLE: u8 = 0x5;
/// INVALIDATE_IOMMU_ALL opcode.
pub const OP_INVALIDATE_IOMMU_ALL: u8 = 0x8;

const OPCODE_SHIFT: u32 = 60;
const STORE_ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_FFF8;
/// COMPLETION_WAIT: raise the completion interrupt (I, bit 1).
const CW_INTERRUPT: u64 = 1 << 1;
const CW_STORE: u64 = 1 << 0;
const PAGES_S: u64 = 1 << 0;
const PAGES_PDE: u64 = 1 << 1;
const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

/// The address field Linux uses (with S=1) to name every page of a domain: all of
/// bits 62:12 set, so the lowest clear bit is 63 and the range is the whole 2^64 space.
pub const ALL_PAGES_ADDRESS: u64 = 0x7FFF_FFFF_FFFF_F000;

/// Encodes the naturally aligned block `[base, base + 2^order)` as the address field and
/// S bit of INVALIDATE_IOMMU_PAGES. Order 12 is one page (S=0); for a larger order the
/// address has bits `order-2..=12` set and bit `order-1` clear (S=1), which the IOMMU reads
/// as "the range size is given by the lowest clear address bit". Order 64 (or more) names
/// every page. `base` must be aligned to `2^order` (use [`covering_block`] otherwise).
pub fn encode_pages_range(base: u64, order: u32) -> (u64, bool) {
    match order {
        0..=12 => (base & PAGE_MASK, false),
        13..=63 => ((base | ((1u64 << (order - 1)) - 1)) & PAGE_MASK, true),
        _ => (ALL_PAGES_ADDRESS, true),
    }
}

/// The specification's reading of an INVALIDATE_IOMMU_PAGES address and S bit: the
/// naturally aligned block `(base, order)` it invalidates (order 64 = everything).
pub fn decode_pages_range(address: u64, s: bool) -> (u64, u32) {
    let address = address & PAGE_MASK;
    if !s {
        return (address, 12);
    }
    // The lowest clear bit at or above bit 12 is bit `order - 1`.
    let lowest_clear = (address | !PAGE_MASK).trailing_ones();
    let order = lowest_clear + 1;
    if order >= 64 {
        return (0, 64);
    }
    (address & !((1u64 << order) - 1), order)
}

/// The smallest naturally aligned block (order >= 12) containing `[iova, iova + 2^order)`.
/// An already aligned block comes back unchanged; order 64 means the whole space.
pub fn covering_block(iova: u64, order: u32) -> (u64, u32) {
    let order = order.max(12);
    if order >= 64 {
        return (0, 64);
    }
    let last = iova.saturating_add((1u64 << order) - 1);
    let differing = iova ^ last;
    let needed = (64 - differing.leading_zeros()).max(12);
    if needed >= 64 {
        (0, 64)
    } else {
        (iova & !((1u64 << needed) - 1), needed)
    }
}

/// One 128-bit command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    quads: [u64; 2],
}

/// A command read back into its fields (used by models, tests and statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodedCommand {
    /// COMPLETION_WAIT: with `store`, write `data` to `address` once all earlier commands completed.
    CompletionWait {
        /// S: store `data` at `address`.
        store: bool,
        /// Store address (8-byte aligned).
        address: PhysAddr,
        /// The value stored.
        data: u64,
    },
    /// INVALIDATE_DEVTAB_ENTRY for one device id.
    InvalidateDevtabEntry {
        /// The device whose cached entry is dropped.
        device: u16,
    },
    /// INVALIDATE_IOMMU_PAGES: the aligned block `(base, order)` of `domain` (order 64 = all).
    InvalidateIommuPages {
        /// DomainID whose translations are dropped.
        domain: DomainId,
        /// First IOVA of the block.
        base: u64,
        /// log2 of the block size (12..=64).
        order: u32,
        /// PDE: cached page-directory entries are dropped too.
        pde: bool,
    },
    /// INVALIDATE_INTERRUPT_TABLE for one device id.
    InvalidateInterruptTable {
        /// The device whose interrupt table entries are dropped.
        device: u16,
    },
    /// INVALIDATE_IOMMU_ALL: every cached translation and entry.
    InvalidateIommuAll,
    /// Any other opcode.
    Other {
        /// Bits 63:60 of the first quadword.
        opcode: u8,
    },
}

impl Command {
    /// COMPLETION_WAIT with S=1: once every earlier command has completed, the IOMMU
    /// writes `data` to the 8-byte aligned `store` address.
    pub fn completion_wait(store: PhysAddr, data: u64) -> Self {
        let q0 = (store & STORE_ADDRESS_MASK) | CW_STORE | op(OP_COMPLETION_WAIT);
        Self { quads: [q0, data] }
    }
    /// COMPLETION_WAIT that also raises the unit's completion interrupt (I=1) when
    /// everything before it has completed (with Control.ComWaitIntEn; through the MSI of
    /// the IOMMU's PCI function), besides storing `data` at `store`.
    pub fn completion_wait_interrupt(store: PhysAddr, data: u64) -> Self {
        let Self { quads: [q0, q1] } = Self::completion_wait(store, data);
        Self { quads: [q0 | CW_INTERRUPT, q1] }
    }
    /// INVALIDATE_DEVTAB_ENTRY: drop whatever the IOMMU cached of `device`'s entry.
    pub fn invalidate_devtab_entry(device: u16) -> Self {
        Self { quads: [u64::from(device) | op(OP_INVALIDATE_DEVTAB_ENTRY), 0] }
    }
    /// INVALIDATE_IOMMU_PAGES for the aligned block `[base, base + 2^order)` of `domain`,
    /// page-directory entries included (PDE=1). See [`encode_pages_range`].
    pub fn invalidate_pages(domain: DomainId, base: u64, order: u32) -> Self {
        let (address, s) = encode_pages_range(base, order);
        let q0 = (u64::from(domain) << 32) | op(OP_INVALIDATE_IOMMU_PAGES);
        let q1 = address | PAGES_PDE | if s { PAGES_S } else { 0 };
        Self { quads: [q0, q1] }
    }
    /// INVALIDATE_IOMMU_PAGES for every page of `domain` (address 0x7FFF_FFFF_FFFF_F000, S=1).
    pub fn invalidate_domain(domain: DomainId) -> Self {
        Self::invalidate_pages(domain, 0, 64)
    }
    /// INVALIDATE_INTERRUPT_TABLE for `device`.
    pub fn invalidate_interrupt_table(device: u16) -> Self {
        Self { quads: [u64::from(device) | op(OP_INVALIDATE_INTERRUPT_TABLE), 0] }
    }
    /// INVALIDATE_IOMMU_ALL (only when EFR.IA says it is implemented).
    pub fn invalidate_all() -> Self {
        Self { quads: [op(OP_INVALIDATE_IOMMU_ALL), 0] }
    }
    /// A command from its two quadwords as found in the buffer.
    pub const fn from_quads(quads: [u64; 2]) -> Self {
        Self { quads }
    }
    /// The two quadwords as written to the buffer.
    pub const fn quads(&self) -> [u64; 2] {
        self.quads
    }
    /// The opcode (bits 63:60 of the first quadword).
    pub fn opcode(&self) -> u8 {
        (self.quads[0] >> OPCODE_SHIFT) as u8
    }
    /// The command's fields, read as the specification defines them.
    pub fn decode(&self) -> DecodedCommand {
        let [q0, q1] = self.quads;
        match self.opcode() {
            OP_COMPLETION_WAIT => DecodedCommand::CompletionWait {
                store: q0 & CW_STORE != 0,
                address: q0 & STORE_ADDRESS_MASK,
                data: q1,
            },
            OP_INVALIDATE_DEVTAB_ENTRY => {
                DecodedCommand::InvalidateDevtabEntry { device: q0 as u16 }
            }
            OP_INVALIDATE_IOMMU_PAGES => {
                let (base, order) = decode_pages_range(q1, q1 & PAGES_S != 0);
                DecodedCommand::InvalidateIommuPages {
                    domain: (q0 >> 32) as u16,
                    base,
                    order,
                    pde: q1 & PAGES_PDE != 0,
                }
            }
            OP_INVALIDATE_INTERRUPT_TABLE => {
                DecodedCommand::InvalidateInterruptTable { device: q0 as u16 }
            }
            OP_INVALIDATE_IOMMU_ALL => DecodedCommand::InvalidateIommuAll,
            opcode => DecodedCommand::Other { opcode },
        }
    }
}

fn op(opcode: u8) -> u64 {
    u64::from(opcode) << OPCODE_SHIFT
}

/// The command buffer: a [`DescriptorRing`] of [`COMMAND_SIZE`]-byte slots in one frame.
/// The driver owns the tail; the IOMMU owns the head. Positions in this API and in the
/// head and tail registers are byte offsets into the ring.
#[derive(Debug)]
pub struct CommandBuffer {
    ring: DescriptorRing,
    issued: u64,
}

impl CommandBuffer {
    /// Size of the ring in bytes.
    pub const LEN: u64 = COMMAND_SIZE << COMMAND_LEN_LOG2;

    /// A ring in the zeroed frame at `base`, empty (tail 0).
    pub fn new(base: PhysAddr) -> Self {
        let ring =
            DescriptorRing::new(base, COMMAND_LEN_LOG2 as u32, EntryVisibility::FlushEachEntry);
        Self { ring, issued: 0 }
    }
    /// Physical address of the ring.
    pub fn base(&self) -> PhysAddr {
        self.ring.base()
    }
    /// The value for the Command Buffer Base Address register (base | ComLen << 56).
    pub fn base_register_value(&self) -> u64 {
        self.ring.base() | (COMMAND_LEN_LOG2 << regs::RING_LENGTH_SHIFT)
    }
    /// The driver's tail: byte offset of the next free slot.
    pub fn tail(&self) -> u64 {
        self.ring.tail() * COMMAND_SIZE
    }
    /// Commands written since the ring was created.
    pub fn issued(&self) -> u64 {
        self.issued
    }
    /// Resets the tail to 0 (with the command buffer disabled, after head and tail
    /// registers were written with 0).
    pub fn reset(&mut self) {
        self.ring.reset();
    }

    /// Writes `cmd` at the tail and hands it (and anything queued before) to the IOMMU
    /// by writing the tail register. Waits (bounded) for a free slot if the ring is full.
    pub fn push(
        &mut self,
        regs: &mut impl Mmio,
        mem: &mut impl PhysMemory,
        cmd: Command,
    ) -> Result<(), HwError> {
        self.queue(regs, mem, cmd)?;
        self.publish(regs);
        Ok(())
    }

    /// Writes `cmd` at the tail without telling the IOMMU yet: a batch of queued commands
    /// costs one tail-register write ([`publish`](Self::publish), or the next `push`).
    /// A full ring is published and waited on (bounded) first.
    pub fn queue(
        &mut self,
        regs: &mut impl Mmio,
        mem: &mut impl PhysMemory,
        cmd: Command,
    ) -> Result<(), HwError> {
        if self.ring.is_full() {
            self.publish(regs);
            self.wait_for_space(regs)?;
        }
        self.ring.push(mem, cmd.quads())?;
        self.issued += 1;
        Ok(())
    }

    /// Writes the tail register if commands were queued since the last write.
    pub fn publish(&mut self, regs: &mut impl Mmio) {
        if let Some(tail) = self.ring.publish() {
            regs.write64(regs::COMMAND_TAIL, tail * COMMAND_SIZE);
        }
    }

    /// Slots free for new commands given the IOMMU's head byte offset; one slot always
    /// stays empty so that a full ring is distinguishable from an empty one.
    pub fn free_slots(&self, head: u64) -> u64 {
        self.ring.free_slots(head / COMMAND_SIZE)
    }

    fn wait_for_space(&mut self, regs: &impl Mmio) -> Result<(), HwError> {
        let ring = &mut self.ring;
        wait_while_running(regs, "a free command buffer slot (head register)", || {
            ring.observe_head(read_head(regs))
        })
    }
}

/// The command index in the head register. QEMU's head reads the buffer size, not 0,
/// after a wrap: the ring takes the index modulo its size, which maps that to 0.
fn read_head(regs: &impl Mmio) -> u64 {
    (regs.read64(regs::COMMAND_HEAD) & regs::RING_POINTER_MASK) / COMMAND_SIZE
}

/// The error of a wait that found Status.CMD_BUF_RUN clear: the IOMMU stopped fetching
/// commands (an illegal command or a fetch error), so waiting longer cannot help.
const COMMAND_BUFFER_STOPPED: HwError = HwError::QueueError { what: "command buffer stopped" };

/// Consecutive reads of a clear Status.CMD_BUF_RUN that make a buffer stopped.
const STOP_CONFIRM: u32 = 64;

/// True when Status.CMD_BUF_RUN is clear although the driver enabled the buffer.
fn command_buffer_stopped(regs: &impl Mmio) -> bool {
    let status = regs::Status::from_bits_retain(regs.read64(regs::STATUS));
    !status.contains(regs::Status::CMD_BUF_RUN)
}

/// Polls `done` (bounded by [`POLL_LIMIT`]) while the command buffer keeps running: a
/// stopped buffer (an illegal command, a hardware error) is reported as such, not as the
/// timeout of whatever `what` names.
pub(crate) fn wait_while_running(
    regs: &impl Mmio,
    what: &'static str,
    mut done: impl FnMut() -> bool,
) -> Result<(), HwError> {
    // Stopped only when the run bit reads clear on STOP_CONFIRM reads in a row: one read
    // (right after enabling, or while the unit updates it) proves nothing.
    let mut clear_reads = 0;
    let mut stopped = false;
    let finished = poll_until(POLL_LIMIT, || {
        if done() {
            return true;
        }
        clear_reads = if command_buffer_stopped(regs) { clear_reads + 1 } else { 0 };
        stopped = clear_reads >= STOP_CONFIRM;
        stopped
    });
    match (stopped, finished) {
        (true, _) => Err(COMMAND_BUFFER_STOPPED),
        (false, true) => Ok(()),
        (false, false) => Err(HwError::Timeout { what }),
    }
}
