//! AMD-Vi (AMD I/O Virtualization, "AMD IOMMU") unit driver.
//!
//! # Programming at a glance
//! An AMD-Vi unit translates a device's DMA through memory-resident structures the driver
//! builds, and is told about changes through a command ring:
//!
//! 1. **Device table** ([`device_table`]): one 32-byte entry per 16-bit device id
//!    (bus:device.function). V=1, TV=1, Mode=N, a page-table root, IR/IW and a DomainID
//!    make the device's DMA go through an N-level v1 page table, cached under that
//!    DomainID. Devices nobody assigned get V=1, TV=1, Mode=0, IR=IW=0, which refuses
//!    everything (V=0 would let them through untranslated). The table is sized from the
//!    highest device id and lives in physically contiguous frames.
//! 2. **Command buffer** ([`command`]): a ring of 16-byte commands. The driver writes a
//!    command at its tail and moves the tail register; the IOMMU executes in order.
//!    INVALIDATE_DEVTAB_ENTRY after every entry change, INVALIDATE_IOMMU_PAGES for a page,
//!    a naturally aligned power-of-two range (S=1, size encoded by the lowest clear
//!    address bit) or a whole domain, INVALIDATE_IOMMU_ALL where EFR.IA says so.
//! 3. **Waiting**: only COMPLETION_WAIT with S=1, which stores a sequence number to a
//!    semaphore in memory once everything before it has completed; the driver polls that
//!    word, bounded by [`POLL_LIMIT`](crate::platform::POLL_LIMIT). The head register is
//!    never polled (QEMU's reads the buffer size after a wrap).
//! 4. **Event log** ([`event_log`]): a ring the IOMMU writes faults and errors into; the
//!    driver reads from its head to the tail register, decodes the records into words,
//!    advances the head, and restarts logging after an overflow.
//! 5. **Enable** ([`unit::AmdViUnit::enable`]): program the three base registers with
//!    8-byte writes, zero the ring pointers, set CmdBufEn and EventLogEn, then IOMMUEn,
//!    then flush every cache and wait.
//!
//! # Using a unit (what the kernel calls)
//! ```text
//! let mut unit = AmdViUnit::new(mmio, mem, max_device_id)?; // reads EFR, allocates, all blocking
//! for line in unit.describe() { log(line) }                 // EFR in words, levels, tables
//! unit.enable()?;                                           // bases, CmdBufEn+EventLogEn, IOMMUEn, flush all
//! unit.attach_device(devid, domain_id, root_table, unit.levels())?;
//! /* unmap ... */ unit.invalidate_block(domain_id, block)?; unit.sync()?; // IotlbInvalidator
//! unit.block_device(devid)?;
//! for event in unit.drain_events() { if limiter.allow(now) { log(event) } }
//! ```
//! `max_device_id` must cover every device id the IVRS resolution produced (select,
//! range and alias entries, and special entries such as QEMU's IOAPIC at 00:14.0).
//!
//! # What the platform must guarantee
//! - [`Mmio`](crate::platform::Mmio): the window at the IVHD base (16 KiB, uncached),
//!   volatile 4- and 8-byte accesses exactly as asked (never split an 8-byte access:
//!   QEMU latches base registers only on an 8-byte write), in program order.
//! - [`PhysMemory`](crate::platform::PhysMemory): volatile `read_u64` (the completion
//!   semaphore is polled through it), `write_u64` stores that become visible in program
//!   order, and `flush_for_device` that writes back cache lines if the unit is not
//!   coherent. [`FrameAllocator`](crate::platform::FrameAllocator): the device table needs
//!   physically contiguous frames (1 per 128 device ids, up to 512); the driver asks one
//!   frame at a time and accepts an ascending or descending run.
//!
//! [`interrupts`] holds the interrupt fields of the device table entry (quad 2: IV, IntCtl,
//! IntTabLen, IntTablePtr, pass bits), the interrupt remapping table and the IVHD
//! device-setting byte: every entry starts with IV = 1 through a table of aborting entries.
//!
//! [`regs`] holds register offsets, control/status bits and the EFR decode. All hardware
//! access goes through [`Mmio`](crate::platform::Mmio) and
//! [`PhysMemory`](crate::platform::PhysMemory), so the same code runs on the machine and
//! against the register model in the host tests.

pub mod command;
pub mod device_table;
pub mod errata;
pub mod event_log;
pub mod interrupts;
pub mod regs;
pub mod unit;

pub use command::{Command, DecodedCommand};
pub use device_table::DeviceTableEntry;
pub use event_log::{Event, EventCounters, EventFlags};
pub use interrupts::{DeviceSetting, DteInterrupts};
pub use regs::Efr;
pub use unit::{initial_control, AmdViUnit, SmiFilterLock, UnitStats};

#[cfg(test)]
mod tests;
