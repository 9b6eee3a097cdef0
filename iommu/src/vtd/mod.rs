//! Intel VT-d remapping-unit driver (legacy, non-scalable mode).
//!
//! # Register programming at a glance
//! - **Discover**: read VER (0x00), CAP (0x08) and ECAP (0x10). SAGAW + MGAW give the
//!   second-level table depth (3-level/39-bit or 4-level/48-bit), SLLPS the large pages,
//!   FRO/NFR where the fault records are, ECAP.IRO where the IOTLB registers are.
//! - **GCMD discipline**: GCMD (0x18) is write-only; its current state is read from GSTS
//!   (0x1C). Every write is `(GSTS & 0x96FF_FFFF) | bit`: the mask drops status bits that sit
//!   where GCMD has one-shot commands (SRTP, SFL, WBF, SIRTP), which would otherwise be
//!   re-issued. Each command is followed by a bounded poll of its GSTS bit.
//! - **Enable**: RTADDR (0x20, 64-bit) = root table; SRTP, poll RTPS; write-buffer flush if
//!   CAP.RWBF; queued mode: IQA (0x90), IQT (0x88) = 0, QIE, poll QIES; global context-cache
//!   and IOTLB invalidation (+ wait); fault event registers; TE, poll TES.
//! - **Tables**: a root entry per bus points to a context table; a context entry per
//!   device function holds P, FPD = 0, TT = 0, the table root, AW = levels - 2 and the DID.
//!   With ECAP.C = 0 each written entry is flushed from CPU caches.
//! - **Invalidation**, one mechanism at a time (with QIE set the registers are ignored):
//!   queued descriptors (context type 1, IOTLB type 2 with AM, wait type 5 with a status
//!   write polled in memory, never SW and IF together), or registers: CCMD (0x28, poll ICC)
//!   and IVA/IOTLB at ECAP.IRO * 16 (IVA first, poll IVT). Page-selective needs CAP.PSI and
//!   AM <= CAP.MAMV, else it widens to domain-selective. CAP.CM units also need an
//!   invalidation after map ([`VtdUnit::flush_after_map`]).
//! - **Interrupt remapping** ([`irq_remap`]): firmware's IR taken down first (IRE off,
//!   IRES polled, CFI cleared); after the queue runs, IRTA (0xB8, 64-bit) = an empty
//!   256-entry table (S = 7, EIME = 0), SIRTP and IRTPS, a global interrupt-entry-cache
//!   invalidation (descriptor type 4) and wait, IRE and IRES. CFI is never set. IRTEs verify
//!   the source id; each change is followed by an index-selective IEC invalidation. No
//!   remapping in register-based invalidation mode (the IEC has no register interface).
//! - **Faults**: FSTS (0x34), FECTL/FEDATA/FEADDR/FEUADDR (0x38..0x44, all 32-bit
//!   registers: never a 64-bit write); records of 16 bytes at CAP.FRO * 16, F cleared by a
//!   32-bit write of bit 31 at record + 12; PFO is write-1-to-clear.
//!
//! # Using it (what the kernel calls)
//! ```text
//! let mut unit = VtdUnit::new(mmio, mem)?;          // reads VER/CAP/ECAP, allocates the root table
//! for line in unit.describe() { log(line) }         // capabilities in words
//! unit.program_fault_interrupt(vector, apic_id)?;   // optional, kept across enable
//! unit.enable()?;                                   // translation on, nothing attached: all DMA faults
//! // build the domain's tables in unit.domain_format()? (depth, SLLPS pages, MGAW aperture)
//! unit.attach_device(rid, domain_id, table_root, unit.levels())?;
//! // after map: unit.flush_after_map(domain_id, block)? (does work only for CM / RWBF units)
//! // after unmap: IotlbInvalidator::{invalidate_block, invalidate_domain} then sync()
//! unit.handle_faults(|record| if limiter.allow(now) { log(record) });
//! unit.detach_device(rid)?;
//! ```
//!
//! Every wait is bounded by [`POLL_LIMIT`](crate::platform::POLL_LIMIT) and reported as
//! [`HwError::Timeout`](crate::error::HwError::Timeout) naming the condition.

pub mod context;
pub mod fault;
mod flush;
pub mod handoff;
pub mod invalidation;
pub mod irq_remap;
pub mod quirks;
pub mod regs;
pub mod root_table;
pub mod unit;

#[cfg(test)]
mod tests;

pub use context::ContextEntry;
pub use fault::{fault_reason, FaultCounters, FaultRecord, FaultScan};
pub use handoff::{HandOff, Quirks};
pub use invalidation::{
    ContextInvalidation, Descriptor, InvalidationQueue, IotlbInvalidation, RegisterInvalidation,
};
pub use irq_remap::{remappable_msi, IrHandoff, IrState, Irte};
pub use regs::{Cap, Ecap};
pub use root_table::{RootEntry, RootTable};
pub use unit::{InvalidationCounts, InvalidationMode, VtdUnit};
