//! A software IOMMU: walks tables as the VT-d and AMD-Vi specifications say and keeps an
//! IOTLB that serves stale translations until an invalidation that covers them completes.

use std::collections::HashMap;

use crate::error::HwError;
use crate::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use crate::pgtable::amdv1::{next_level, sized_page_order, AMD_IR, AMD_IW, AMD_MAX_ORDER, AMD_PR};
use crate::pgtable::vtd::{VTD_PS, VTD_R, VTD_W};
use crate::pgtable::{level_index, level_shift, Prot, PADDR_MASK};
use crate::platform::{PhysAddr, PhysMemory};

/// Which specification the model walks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// VT-d second level; `sllps` as in CAP.SLLPS.
    Vtd {
        /// Superpage support bits (bit 0: 2M, bit 1: 1G).
        sllps: u8,
    },
    /// AMD-Vi v1 tables.
    AmdV1,
}

/// Why a translation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No such domain programmed.
    NoContext,
    /// A not-present entry on the way.
    NotPresent,
    /// A reserved bit set, or a malformed size or level.
    Reserved,
    /// The leaf does not grant the access.
    Permission,
    /// The walk read memory that is not a live table frame.
    BadTable,
    /// The IOVA is beyond the address width.
    OutOfRange,
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Fault::NoContext => "no domain is programmed for the device",
            Fault::NotPresent => "a not-present entry on the walk",
            Fault::Reserved => "a reserved bit set, or a malformed size or level",
            Fault::Permission => "the leaf does not grant the access",
            Fault::BadTable => "the walk read memory that is not a live table",
            Fault::OutOfRange => "the IOVA is beyond the address width",
        })
    }
}

/// One invalidation the model was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidation {
    /// Page-selective: one block of one domain.
    Block(DomainId, IovaBlock),
    /// Everything of one domain.
    Domain(DomainId),
}

/// The model unit: programmed domains, an IOTLB keyed by (domain, 4 KiB page), and
/// invalidations that take effect only when `sync` returns.
#[derive(Debug)]
pub struct ModelIommu {
    kind: ModelKind,
    contexts: HashMap<DomainId, (PhysAddr, u32)>,
    iotlb: HashMap<(DomainId, u64), (PhysAddr, Prot)>,
    /// The page-walk cache (see `walk_cache.rs`).
    pub(super) pwc: crate::model::walk_cache::WalkCache,
    pending: Vec<Invalidation>,
    /// Largest block order accepted (like VT-d CAP.MAMV + 12).
    pub max_order: u32,
    /// Page-selective invalidations seen.
    pub block_invalidations: u64,
    /// Domain-wide invalidations seen.
    pub domain_invalidations: u64,
    /// `sync` calls.
    pub syncs: u64,
    /// Every invalidation asked for, in order.
    pub log: Vec<Invalidation>,
    /// When set, nothing is cached (fast mode for benchmarks).
    pub cache_disabled: bool,
    /// When set, `sync` fails (a unit whose invalidations time out).
    pub fail_sync: bool,
}

impl ModelIommu {
    /// A unit walking by `kind`'s specification.
    pub fn new(kind: ModelKind) -> Self {
        Self {
            kind,
            contexts: HashMap::new(),
            iotlb: HashMap::new(),
            pwc: Default::default(),
            pending: Vec::new(),
            max_order: 63,
            block_invalidations: 0,
            domain_invalidations: 0,
            syncs: 0,
            log: Vec::new(),
            cache_disabled: false,
            fail_sync: false,
        }
    }

    /// Points `domain` at a table (context entry / DTE programming).
    pub fn set_context(&mut self, domain: DomainId, root: PhysAddr, levels: u32) {
        self.contexts.insert(domain, (root, levels));
    }

    /// Removes `domain`'s context (the device is blocked).
    pub fn clear_context(&mut self, domain: DomainId) {
        self.contexts.remove(&domain);
    }

    /// A DMA of `access` to `iova`: the IOTLB first, else a table walk that fills it.
    pub fn translate<M: PhysMemory>(
        &mut self,
        mem: &M,
        domain: DomainId,
        iova: u64,
        access: Prot,
    ) -> Result<PhysAddr, Fault> {
        let page = iova & !0xFFF;
        if let Some(&(pa, prot)) = self.iotlb.get(&(domain, page)) {
            return if prot.contains(access) {
                Ok(pa | (iova & 0xFFF))
            } else {
                Err(Fault::Permission)
            };
        }
        let &(root, levels) = self.contexts.get(&domain).ok_or(Fault::NoContext)?;
        if page >> (level_shift(levels) + 9) != 0 {
            return Err(Fault::OutOfRange);
        }
        let (pa, prot) = self.walk_cached(mem, domain, root, levels, page)?;
        if !self.cache_disabled {
            self.iotlb.insert((domain, page), (pa, prot));
        }
        if prot.contains(access) {
            Ok(pa | (iova & 0xFFF))
        } else {
            Err(Fault::Permission)
        }
    }

    /// Walks the tables only (no IOTLB): the physical page and access for `page`.
    pub fn walk<M: PhysMemory>(
        &self,
        mem: &M,
        root: PhysAddr,
        levels: u32,
        page: u64,
    ) -> Result<(PhysAddr, Prot), Fault> {
        if page >> (level_shift(levels) + 9) != 0 {
            return Err(Fault::OutOfRange);
        }
        let start = WalkStart { table: root, level: levels, prot: Prot::READ | Prot::WRITE };
        self.walk_from(mem, start, page, &mut |_, _, _| {})
    }

    pub(super) fn walk_from<M: PhysMemory>(
        &self,
        mem: &M,
        start: WalkStart,
        page: u64,
        visit: Visit,
    ) -> Result<(PhysAddr, Prot), Fault> {
        match self.kind {
            ModelKind::Vtd { sllps } => walk_vtd(mem, start, page, sllps, visit),
            ModelKind::AmdV1 => walk_amd(mem, start, page, visit),
        }
    }

    /// Every cached translation whose physical page lies in `[paddr, paddr + len)`.
    pub fn cached_targets(&self, paddr: PhysAddr, len: u64) -> Vec<(DomainId, u64)> {
        self.iotlb
            .iter()
            .filter(|(_, &(pa, _))| pa >= paddr && pa < paddr + len)
            .map(|(&k, _)| k)
            .collect()
    }

    /// Cached IOVA pages of `domain` in `[iova, iova + len)`.
    pub fn cached_iovas(&self, domain: DomainId, iova: u64, len: u64) -> usize {
        self.iotlb.keys().filter(|&&(d, p)| d == domain && p >= iova && p < iova + len).count()
    }
}

fn read_entry<M: PhysMemory>(mem: &M, table: PhysAddr, idx: usize) -> u64 {
    mem.read_u64(table + 8 * idx as u64)
}

/// Where a walk starts: a table, its level, and the access granted above it.
#[derive(Debug, Clone, Copy)]
pub(super) struct WalkStart {
    pub(super) table: PhysAddr,
    pub(super) level: u32,
    pub(super) prot: Prot,
}

/// Called for every next-level table a walk follows: (its level, its address, the access
/// granted above it): what a page-walk cache keeps.
pub(super) type Visit<'a> = &'a mut dyn FnMut(u32, PhysAddr, Prot);

fn walk_vtd<M: PhysMemory>(
    mem: &M,
    start: WalkStart,
    page: u64,
    sllps: u8,
    visit: Visit,
) -> Result<(PhysAddr, Prot), Fault> {
    // Bits the legacy-mode second-level walk requires to be zero: 6:2 (X, EMT, IPAT
    // are not enabled), 11 (SNP without snoop control), 62 (TM), 63 and 52+ address.
    const RESERVED: u64 = 0x7C | (1 << 11) | (1 << 62) | (1 << 63) | (0x3FF << 52);
    let WalkStart { mut table, mut level, mut prot } = start;
    loop {
        let raw = read_entry(mem, table, level_index(page, level));
        if raw == u64::MAX {
            return Err(Fault::BadTable);
        }
        if raw & (VTD_R | VTD_W) == 0 {
            return Err(Fault::NotPresent);
        }
        if raw & RESERVED != 0 {
            return Err(Fault::Reserved);
        }
        let mut here = Prot::empty();
        here.set(Prot::READ, raw & VTD_R != 0);
        here.set(Prot::WRITE, raw & VTD_W != 0);
        prot &= here;
        let ps_allowed = match level {
            2 => sllps & 1 != 0,
            3 => sllps & 2 != 0,
            _ => false,
        };
        let is_leaf = level == 1 || raw & VTD_PS != 0;
        if raw & VTD_PS != 0 && !ps_allowed {
            return Err(Fault::Reserved);
        }
        let addr = raw & PADDR_MASK;
        if is_leaf {
            let size = 1u64 << level_shift(level);
            if addr & (size - 1) != 0 {
                return Err(Fault::Reserved);
            }
            return Ok((addr + (page & (size - 1)), prot));
        }
        table = addr;
        level -= 1;
        visit(level, table, prot);
    }
}

fn walk_amd<M: PhysMemory>(
    mem: &M,
    start: WalkStart,
    page: u64,
    visit: Visit,
) -> Result<(PhysAddr, Prot), Fault> {
    const RESERVED: u64 = 0x7F << 52;
    let WalkStart { mut table, mut level, mut prot } = start;
    loop {
        let raw = read_entry(mem, table, level_index(page, level));
        if raw == u64::MAX {
            return Err(Fault::BadTable);
        }
        if raw & AMD_PR == 0 {
            return Err(Fault::NotPresent);
        }
        if raw & RESERVED != 0 {
            return Err(Fault::Reserved);
        }
        let mut here = Prot::empty();
        here.set(Prot::READ, raw & AMD_IR != 0);
        here.set(Prot::WRITE, raw & AMD_IW != 0);
        prot &= here;
        let addr = raw & PADDR_MASK;
        let shift = level_shift(level);
        match next_level(raw) {
            0 => {
                let size = 1u64 << shift;
                return Ok(((addr & !(size - 1)) + (page & (size - 1)), prot));
            }
            7 => {
                let order = sized_page_order(raw);
                if order <= shift || order >= shift + 9 || order > AMD_MAX_ORDER {
                    return Err(Fault::Reserved);
                }
                let size = 1u64 << order;
                return Ok(((addr & !(size - 1)) + (page & (size - 1)), prot));
            }
            nl => {
                let nl = nl as u32;
                if nl >= level {
                    return Err(Fault::Reserved);
                }
                // Level skip: the IOVA bits of the skipped levels must be zero.
                for skipped in nl + 1..level {
                    if level_index(page, skipped) != 0 {
                        return Err(Fault::NotPresent);
                    }
                }
                table = addr;
                level = nl;
                visit(level, table, prot);
            }
        }
    }
}

impl IotlbInvalidator for ModelIommu {
    fn max_block_order(&self) -> u32 {
        self.max_order
    }

    fn invalidate_block(&mut self, domain: DomainId, block: IovaBlock) -> Result<(), HwError> {
        if block.order < 12 || block.order > self.max_order || block.iova & (block.size() - 1) != 0
        {
            return Err(HwError::QueueError { what: "malformed page-selective invalidation" });
        }
        self.block_invalidations += 1;
        self.log.push(Invalidation::Block(domain, block));
        self.pending.push(Invalidation::Block(domain, block));
        Ok(())
    }

    fn invalidate_domain(&mut self, domain: DomainId) -> Result<(), HwError> {
        self.domain_invalidations += 1;
        self.log.push(Invalidation::Domain(domain));
        self.pending.push(Invalidation::Domain(domain));
        Ok(())
    }

    fn sync(&mut self) -> Result<(), HwError> {
        if self.fail_sync {
            return Err(HwError::Timeout { what: "model IOTLB invalidation" });
        }
        self.syncs += 1;
        for p in std::mem::take(&mut self.pending) {
            match p {
                Invalidation::Domain(d) => {
                    self.iotlb.retain(|&(dd, _), _| dd != d);
                    self.pwc.invalidate(d, 0, u64::MAX);
                }
                Invalidation::Block(d, b) => {
                    let end = b.iova.saturating_add(b.size());
                    self.iotlb.retain(|&(dd, p), _| dd != d || p < b.iova || p >= end);
                    self.pwc.invalidate(d, b.iova, end);
                }
            }
        }
        Ok(())
    }
}
