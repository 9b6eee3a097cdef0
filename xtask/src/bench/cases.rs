//! One measured case: map `bytes` of IOVA in one format and backing through a tracker,
//! then tear it down with one strategy, counting what the hardware would be asked for.

use std::time::Instant;

use iommu::domain::Domain;
use iommu::error::HwError;
use iommu::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use iommu::model::HostMemory;
use iommu::pgtable::amdv1::AmdV1Format;
use iommu::pgtable::vtd::VtdFormat;
use iommu::pgtable::{Prot, PteFormat};
use iommu::tracker::{DmaTracker, HostExtent, UnmapStrategy};

pub const GIB: u64 = 1 << 30;
const IOVA_BASE: u64 = 1 << 36;
const HOST_BASE: u64 = 0x100_0000_0000;
const PROBE_PAIR: u64 = 0x7F_0000_0000;
/// The address space is mapped as 1 GiB mappings (a VMM's memory slots), so the
/// caller's extent list stays small at 1 TiB.
const MAPPING: u64 = GIB;

/// Counts what a driver would issue (nothing is executed, nothing waits).
struct CountingInvalidator {
    max_order: u32,
    commands: u64,
    syncs: u64,
}

impl IotlbInvalidator for CountingInvalidator {
    fn max_block_order(&self) -> u32 {
        self.max_order
    }
    fn invalidate_block(&mut self, _d: DomainId, _b: IovaBlock) -> Result<(), HwError> {
        self.commands += 1;
        Ok(())
    }
    fn invalidate_domain(&mut self, _d: DomainId) -> Result<(), HwError> {
        self.commands += 1;
        Ok(())
    }
    fn sync(&mut self) -> Result<(), HwError> {
        self.syncs += 1;
        Ok(())
    }
}

/// The page-table formats benchmarked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// VT-d second level, 4 levels, 2M and 1G pages, CAP.MAMV = 18.
    Vtd,
    /// AMD-Vi v1, 4 levels, every page size.
    AmdV1,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::Vtd, Format::AmdV1];
    pub fn name(self) -> &'static str {
        match self {
            Format::Vtd => "vtd",
            Format::AmdV1 => "amdv1",
        }
    }
}

/// Host memory behind the IOVA space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Physically contiguous 4 KiB pages, IOMMU restricted to 4 KiB pages.
    Contig4k,
    /// 4 KiB pages, none adjacent to the next, IOMMU restricted to 4 KiB pages.
    Frag4k,
    /// 2 MiB pages with gaps between them, largest IOMMU pages.
    TwoMeg,
    /// A deterministic mix of 4 KiB, 64 KiB and 2 MiB pieces, largest IOMMU pages.
    Mixed,
}

impl Backing {
    pub const ALL: [Backing; 4] =
        [Backing::Contig4k, Backing::Frag4k, Backing::TwoMeg, Backing::Mixed];
    pub fn name(self) -> &'static str {
        match self {
            Backing::Contig4k => "4k-contig",
            Backing::Frag4k => "4k-frag",
            Backing::TwoMeg => "2m",
            Backing::Mixed => "mixed",
        }
    }

    fn only_4k(self) -> bool {
        matches!(self, Backing::Contig4k | Backing::Frag4k)
    }

    /// The extents behind mapping `index` (`len` bytes), into `out`.
    fn extents(self, index: u64, len: u64, out: &mut Vec<HostExtent>) {
        out.clear();
        let base = index * len;
        match self {
            Backing::Contig4k => out.push(HostExtent { paddr: HOST_BASE + base, len }),
            Backing::Frag4k => out.extend(
                (0..len / 4096)
                    .map(|i| HostExtent { paddr: HOST_BASE + 2 * (base + i * 4096), len: 4096 }),
            ),
            Backing::TwoMeg => {
                out.extend((0..len >> 21).map(|i| HostExtent {
                    paddr: HOST_BASE + 2 * (base + (i << 21)),
                    len: 1 << 21,
                }))
            }
            Backing::Mixed => {
                // Per 2 MiB of IOVA: one 2 MiB piece, or 32 x 64 KiB, or 512 x 4 KiB
                // pieces, chosen by a fixed hash; every piece apart from the next.
                for chunk in 0..len >> 21 {
                    let at = HOST_BASE + 2 * (base + (chunk << 21));
                    let piece = match ((base >> 21) + chunk).wrapping_mul(0x9E37_79B9) >> 7 & 3 {
                        0 | 1 => 1 << 21,
                        2 => 1 << 16,
                        _ => 1 << 12,
                    };
                    // Each 2 MiB of IOVA has 4 MiB of host space: pieces 2 x apart.
                    out.extend(
                        (0..(1u64 << 21) / piece)
                            .map(|i| HostExtent { paddr: at + 2 * i * piece, len: piece }),
                    );
                }
            }
        }
    }
}

/// The strategies compared, by their names in the output.
pub const STRATEGIES: [(UnmapStrategy, &str); 5] = [
    (UnmapStrategy::PageByPage, "page-by-page"),
    (UnmapStrategy::SeedChunked, "seed-chunked"),
    (UnmapStrategy::LinuxFgsp, "linux-fgsp"),
    (UnmapStrategy::Linux2018, "linux-2018"),
    (UnmapStrategy::Gathered, "default"),
];

/// What one teardown measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub format: Format,
    pub backing: Backing,
    pub strategy: &'static str,
    pub gib: u64,
    pub fgsp: bool,
    pub cpu_nanos: u64,
    pub invalidations: u64,
    pub waits: u64,
    pub unmap_calls: u64,
    pub pte_reads: u64,
    pub pte_writes: u64,
    pub map_nanos: u64,
    pub table_bytes: u64,
    pub bookkeeping_bytes_resident: u64,
    pub bookkeeping_bytes_peak: u64,
}

fn run_in<F: PteFormat>(
    format: F,
    max_order: u32,
    which: Format,
    backing: Backing,
    (strategy, name): (UnmapStrategy, &'static str),
    gib: u64,
) -> Result<Measured, String> {
    let bytes = gib * GIB;
    let mut mem = HostMemory::new();
    let mut inv = CountingInvalidator { max_order, commands: 0, syncs: 0 };
    let mut tracker = DmaTracker::new(strategy, PROBE_PAIR);
    let mut domain = Domain::new(&mut mem, 1, 0, format).map_err(|e| e.to_string())?;
    if backing.only_4k() {
        domain = domain.with_page_sizes(1 << 12);
    }
    tracker.attach(&mut mem, &mut inv, domain).map_err(|(_, e)| format!("attach: {e}"))?;
    let fgsp = tracker.domains()[0].fgsp();
    let mut extents = Vec::new();
    let mut map_nanos = 0u64;
    let len = MAPPING.min(bytes);
    for i in 0..bytes / len {
        backing.extents(i, len, &mut extents);
        let t = Instant::now();
        tracker
            .map_dma(&mut mem, &mut inv, IOVA_BASE + i * len, &extents, Prot::READ | Prot::WRITE)
            .map_err(|e| format!("map_dma: {e}"))?;
        map_nanos += t.elapsed().as_nanos() as u64;
    }
    drop(extents);
    let table_bytes = mem.live_frames() as u64 * 4096;
    let resident = tracker.bookkeeping_bytes();
    let map_peak = tracker.counters().bookkeeping_peak;
    tracker.reset_counters();
    inv.commands = 0;
    inv.syncs = 0;
    let (reads0, writes0) = (mem.reads.get(), mem.writes);
    let mut released = 0u64;
    let t = Instant::now();
    let domains = tracker
        .teardown(&mut mem, &mut inv, &mut |e| released += e.len)
        .map_err(|e| format!("teardown: {e}"))?;
    let cpu_nanos = t.elapsed().as_nanos() as u64;
    let (pte_reads, pte_writes) = (mem.reads.get() - reads0, mem.writes - writes0);
    for d in domains {
        d.destroy(&mut mem);
    }
    if mem.live_frames() != 0 {
        return Err(format!("{} table frames leaked", mem.live_frames()));
    }
    if released != bytes {
        return Err(format!("released {released} of {bytes} bytes"));
    }
    let c = tracker.counters();
    Ok(Measured {
        format: which,
        backing,
        strategy: name,
        gib,
        fgsp,
        cpu_nanos,
        invalidations: inv.commands,
        waits: inv.syncs,
        unmap_calls: c.unmap_calls,
        pte_reads,
        pte_writes,
        map_nanos,
        table_bytes,
        bookkeeping_bytes_resident: resident,
        bookkeeping_bytes_peak: map_peak.max(c.bookkeeping_peak),
    })
}

/// Maps and tears down `gib` GiB in `format` and `backing` with `strategy`.
pub fn run(
    format: Format,
    backing: Backing,
    strategy: (UnmapStrategy, &'static str),
    gib: u64,
) -> Result<Measured, String> {
    match format {
        Format::Vtd => {
            let f = VtdFormat::new(4, 3).ok_or("VT-d format")?;
            run_in(f, 12 + 18, format, backing, strategy, gib)
        }
        Format::AmdV1 => {
            let f = AmdV1Format::new(4).ok_or("AMD-Vi format")?;
            run_in(f, 63, format, backing, strategy, gib)
        }
    }
}
