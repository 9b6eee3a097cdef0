//! `cargo xtask bench`: teardown of a large DMA address space under each unmap strategy.
//!
//! For each format (VT-d second level, AMD-Vi v1) and backing it maps `--gib` GiB (64 by
//! default) with one `map_dma`, tears it down with the tracker, and reports unmap calls,
//! invalidations, table-walk steps and wall time, plus map throughput and a raw scan of the
//! same leaf entries as the floor. Runs itself in release (re-executes through cargo).

use std::time::Instant;

use iommu::domain::Domain;
use iommu::error::HwError;
use iommu::invalidate::{DomainId, IotlbInvalidator, IovaBlock};
use iommu::model::HostMemory;
use iommu::pgtable::amdv1::AmdV1Format;
use iommu::pgtable::vtd::VtdFormat;
use iommu::pgtable::{Prot, PteFormat};
use iommu::tracker::{DmaTracker, HostExtent, UnmapStrategy};

const GIB: u64 = 1 << 30;
const IOVA_BASE: u64 = 1 << 36;
const HOST_BASE: u64 = 0x100_0000_0000;
const PROBE_PAIR: u64 = 0x7F_0000_0000;

/// Counts what a driver would issue; each `sync` optionally spins `sync_ns` to stand in
/// for the hardware's completion wait (`--sync-ns`, 0 by default: CPU work only).
struct CountingInvalidator {
    max_order: u32,
    commands: u64,
    syncs: u64,
    sync_ns: u64,
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
        if self.sync_ns > 0 {
            let t = Instant::now();
            while t.elapsed().as_nanos() < u128::from(self.sync_ns) {
                std::hint::spin_loop();
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backing {
    Contig4k,
    Frag4k,
    TwoMegSuper,
    TwoMegNoSuper,
    Contig4kSuper,
}

impl Backing {
    const ALL: [Backing; 5] = [
        Backing::Contig4k,
        Backing::Frag4k,
        Backing::TwoMegSuper,
        Backing::TwoMegNoSuper,
        Backing::Contig4kSuper,
    ];

    fn name(self) -> &'static str {
        match self {
            Backing::Contig4k => "4k-contig",
            Backing::Frag4k => "4k-frag",
            Backing::TwoMegSuper => "2m-super",
            Backing::TwoMegNoSuper => "2m-nosuper",
            Backing::Contig4kSuper => "4k-contig-super",
        }
    }

    fn superpages(self) -> bool {
        matches!(self, Backing::TwoMegSuper | Backing::Contig4kSuper)
    }

    /// Host memory for `bytes`: physically contiguous, 4 KiB pages with gaps between
    /// them, or 2 MiB pages with gaps.
    fn extents(self, bytes: u64) -> Vec<HostExtent> {
        match self {
            Backing::Contig4k | Backing::Contig4kSuper => {
                vec![HostExtent { paddr: HOST_BASE, len: bytes }]
            }
            Backing::Frag4k => (0..bytes / 4096)
                .map(|i| HostExtent { paddr: HOST_BASE + i * 8192, len: 4096 })
                .collect(),
            Backing::TwoMegSuper | Backing::TwoMegNoSuper => (0..bytes >> 21)
                .map(|i| HostExtent { paddr: HOST_BASE + (i << 22), len: 1 << 21 })
                .collect(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Tracker(UnmapStrategy),
    RawScan,
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Tracker(UnmapStrategy::PageByPage) => "page-by-page",
        Strategy::Tracker(UnmapStrategy::SeedChunked) => "seed-chunked",
        Strategy::Tracker(UnmapStrategy::LinuxFgsp) => "linux-fgsp",
        Strategy::Tracker(UnmapStrategy::Gathered) => "default",
        Strategy::RawScan => "raw-scan",
    }
}

const STRATEGIES: [Strategy; 5] = [
    Strategy::Tracker(UnmapStrategy::PageByPage),
    Strategy::Tracker(UnmapStrategy::SeedChunked),
    Strategy::Tracker(UnmapStrategy::LinuxFgsp),
    Strategy::Tracker(UnmapStrategy::Gathered),
    Strategy::RawScan,
];

struct Row {
    format: &'static str,
    backing: &'static str,
    strategy: &'static str,
    fgsp: bool,
    unmap_calls: u64,
    invalidations: u64,
    syncs: u64,
    walk_steps: u64,
    nanos: u128,
    map_nanos: u128,
    bytes: u64,
}

fn run_case<F: PteFormat>(
    format: F,
    fmt_name: &'static str,
    max_order: u32,
    backing: Backing,
    strategy: Strategy,
    bytes: u64,
    sync_ns: u64,
) -> Result<Row, String> {
    let mut mem = HostMemory::new();
    let mut inv = CountingInvalidator { max_order, commands: 0, syncs: 0, sync_ns };
    let tracker_strategy = match strategy {
        Strategy::Tracker(s) => s,
        Strategy::RawScan => UnmapStrategy::Gathered,
    };
    let mut tracker = DmaTracker::new(tracker_strategy, PROBE_PAIR);
    let mut domain = Domain::new(&mut mem, 1, 0, format).map_err(|e| e.to_string())?;
    if !backing.superpages() {
        domain = domain.with_page_sizes(1 << 12);
    }
    tracker.attach(&mut mem, &mut inv, domain).map_err(|(_, e)| format!("attach: {e:?}"))?;
    let fgsp = tracker.domains()[0].fgsp();
    let extents = backing.extents(bytes);
    let t0 = Instant::now();
    tracker
        .map_dma(&mut mem, &mut inv, IOVA_BASE, &extents, Prot::READ | Prot::WRITE)
        .map_err(|e| format!("map_dma: {e:?}"))?;
    let map_nanos = t0.elapsed().as_nanos();
    drop(extents);
    tracker.reset_counters();
    inv.commands = 0;
    inv.syncs = 0;
    let mut released = 0u64;
    let (nanos, walk_steps, unmap_calls) = match strategy {
        Strategy::RawScan => {
            let table = tracker.domains()[0].table();
            let before = table.walk_steps();
            let mut sum = 0u64;
            let t = Instant::now();
            table.for_each_run(&mem, IOVA_BASE, bytes, |r| sum = sum.wrapping_add(r.size));
            let nanos = t.elapsed().as_nanos();
            if sum != bytes {
                return Err(format!("raw scan saw {sum} of {bytes} bytes"));
            }
            released = bytes;
            (nanos, table.walk_steps() - before, 0)
        }
        Strategy::Tracker(_) => {
            let t = Instant::now();
            let domains = tracker
                .teardown(&mut mem, &mut inv, &mut |e| released += e.len)
                .map_err(|e| format!("{e:?}"))?;
            let nanos = t.elapsed().as_nanos();
            for d in domains {
                d.destroy(&mut mem);
            }
            if mem.live_frames() != 0 {
                return Err(format!("{} table frames leaked", mem.live_frames()));
            }
            let c = tracker.counters();
            (nanos, c.walk_steps, c.unmap_calls)
        }
    };
    if released != bytes {
        return Err(format!("released {released} of {bytes} bytes"));
    }
    Ok(Row {
        format: fmt_name,
        backing: backing.name(),
        strategy: strategy_name(strategy),
        fgsp,
        unmap_calls,
        invalidations: inv.commands,
        syncs: inv.syncs,
        walk_steps,
        nanos,
        map_nanos,
        bytes,
    })
}

fn reexec_release(args: &[String]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["run", "--quiet", "--release", "-p", "xtask", "--", "bench"])
        .args(args)
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err("release bench failed".into())
    }
}

/// Entry point of `cargo xtask bench [--json] [--gib N] [--sync-ns N] [--qemu ...]`
/// (`--qemu` hands everything to [`crate::bench_qemu`]).
pub fn run(args: &[String]) -> Result<(), String> {
    let mut json = false;
    let mut gib = 64u64;
    let mut sync_ns = 0u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--qemu" => return crate::bench_qemu::run(args),
            "--gib" => {
                gib = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&g| g > 0)
                    .ok_or(xtask::usage_error("--gib needs a number".into()))?
            }
            "--sync-ns" => {
                sync_ns = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or(xtask::usage_error("--sync-ns needs a number".into()))?
            }
            other => return Err(xtask::usage_error(format!("bench: unknown option `{other}`"))),
        }
    }
    if cfg!(debug_assertions) {
        return reexec_release(args);
    }
    let bytes = gib * GIB;
    let mut rows = Vec::new();
    for fmt in ["vtd", "amdv1"] {
        for backing in Backing::ALL {
            for strategy in STRATEGIES {
                let row = match fmt {
                    // 4-level, 2M+1G pages, CAP.MAMV = 18.
                    "vtd" => run_case(
                        VtdFormat::new(4, 3).unwrap(),
                        "vtd",
                        12 + 18,
                        backing,
                        strategy,
                        bytes,
                        sync_ns,
                    )?,
                    _ => run_case(
                        AmdV1Format::new(4).unwrap(),
                        "amdv1",
                        63,
                        backing,
                        strategy,
                        bytes,
                        sync_ns,
                    )?,
                };
                if !json {
                    eprint!(".");
                }
                rows.push(row);
            }
        }
    }
    if json {
        print_json(&rows);
    } else {
        eprintln!();
        print_table(&rows, gib, sync_ns);
    }
    Ok(())
}

fn print_json(rows: &[Row]) {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"format\":\"{}\",\"backing\":\"{}\",\"strategy\":\"{}\",\"fgsp\":{},\"unmap_calls\":{},\
                 \"invalidations\":{},\"syncs\":{},\"walk_steps\":{},\"nanos\":{},\"map_nanos\":{},\"bytes\":{}}}",
                r.format,
                r.backing,
                r.strategy,
                r.fgsp,
                r.unmap_calls,
                r.invalidations,
                r.syncs,
                r.walk_steps,
                r.nanos,
                r.map_nanos,
                r.bytes
            )
        })
        .collect();
    println!("[\n  {}\n]", items.join(",\n  "));
}

fn find<'a>(rows: &'a [Row], f: &str, b: &str, s: &str) -> &'a Row {
    rows.iter().find(|r| r.format == f && r.backing == b && r.strategy == s).expect("row exists")
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        f64::INFINITY
    } else {
        a / b
    }
}

fn print_table(rows: &[Row], gib: u64, sync_ns: u64) {
    println!(
        "teardown of {gib} GiB of IOVA space (time = CPU work + {sync_ns} ns per sync; invalidations counted, not executed)"
    );
    println!(
        "{:<6} {:<16} {:<13} {:>5} {:>10} {:>10} {:>12} {:>11} {:>9} {:>9} {:>9}",
        "format",
        "backing",
        "strategy",
        "fgsp",
        "unmaps",
        "invals",
        "walk steps",
        "time ms",
        "x pbp",
        "inv/pbp",
        "map GiB/s"
    );
    for r in rows {
        let pbp = find(rows, r.format, r.backing, "page-by-page");
        let map_rate = (r.bytes as f64 / GIB as f64) / (r.map_nanos as f64 / 1e9);
        println!(
            "{:<6} {:<16} {:<13} {:>5} {:>10} {:>10} {:>12} {:>11.3} {:>9.1} {:>9.1} {:>9.1}",
            r.format,
            r.backing,
            r.strategy,
            r.fgsp,
            r.unmap_calls,
            r.invalidations,
            r.walk_steps,
            r.nanos as f64 / 1e6,
            ratio(pbp.nanos as f64, r.nanos as f64),
            ratio(pbp.invalidations as f64, r.invalidations as f64),
            map_rate
        );
    }
    println!("\ntargets (x pbp = page-by-page time / this time):");
    for fmt in ["vtd", "amdv1"] {
        let d = find(rows, fmt, "4k-contig", "default");
        let p = find(rows, fmt, "4k-contig", "page-by-page");
        let s = find(rows, fmt, "4k-contig", "seed-chunked");
        let raw = find(rows, fmt, "4k-contig", "raw-scan");
        let inv = ratio(p.invalidations as f64, d.invalidations as f64);
        let time = ratio(p.nanos as f64, d.nanos as f64);
        let seed = ratio(d.nanos as f64, s.nanos as f64);
        let floor = ratio(d.nanos as f64, raw.nanos as f64);
        println!("  {fmt} 4k-contig: {inv:.0}x fewer invalidations (>=100), {time:.1}x less time (>=5), {seed:.3} of seed's time (<=0.5), {floor:.2} of raw scan (<=2)");
    }
    for fmt in ["vtd", "amdv1"] {
        let parts: Vec<String> = Backing::ALL
            .iter()
            .map(|b| {
                let d = find(rows, fmt, b.name(), "default");
                let raw = find(rows, fmt, b.name(), "raw-scan");
                format!("{} {:.2}", b.name(), ratio(d.nanos as f64, raw.nanos as f64))
            })
            .collect();
        println!("  {fmt} default / raw scan (<=2): {}", parts.join(", "));
    }
    for backing in ["4k-contig-super", "2m-super"] {
        let d = find(rows, "amdv1", backing, "default");
        let p = find(rows, "amdv1", backing, "page-by-page");
        println!(
            "  amdv1 {backing} (fgsp={}): default {:.1} us vs page-by-page {:.1} us (default must be no slower)",
            d.fgsp,
            d.nanos as f64 / 1e3,
            p.nanos as f64 / 1e3
        );
    }
}
