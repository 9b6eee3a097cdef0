//! `cargo xtask bench`: teardown of a large DMA address space under each unmap strategy.
//!
//! For each format (VT-d second level, AMD-Vi v1), backing (4K contiguous, 4K fragmented,
//! 2M, mixed) and strategy (page-by-page, the seed's chunking, Linux 2015 with fgsp,
//! Linux since 2018, this project's default) it maps `--gib` GiB (64 by default; host
//! frames are simulated, the page tables are real) through a DMA tracker, tears it down,
//! and reports the CPU time measured, the invalidation commands and completion waits the
//! hardware would execute, their cost by [`cost::CostModel`] (added, never spun), PTE
//! reads and writes, map time, and the tracker's bookkeeping. `--json` prints the rows
//! (schema: docs/bench-json.md), `--plot FILE.svg` draws time and invalidations against
//! memory size. Runs itself in release (re-executes through cargo).

mod cases;
mod cost;
mod plot;

use cases::{Backing, Format, Measured, GIB, STRATEGIES};
use cost::CostModel;

/// One output row: a measurement under one cost model.
pub struct Row<'a> {
    m: &'a Measured,
    model: CostModel,
}

impl Row<'_> {
    fn nanos(&self) -> u64 {
        self.m.cpu_nanos + self.model.nanos(self.m.invalidations, self.m.waits)
    }

    fn pages(&self) -> u64 {
        self.m.gib * GIB / 4096
    }

    fn json(&self) -> serde_json::Value {
        let m = self.m;
        serde_json::json!({
            "format": m.format.name(),
            "backing": m.backing.name(),
            "strategy": m.strategy,
            "gib": m.gib,
            "sync_ns": self.model.sync_ns,
            "cmd_ns": self.model.cmd_ns,
            "nanos": self.nanos(),
            "cpu_nanos": m.cpu_nanos,
            "invalidations": m.invalidations,
            "waits": m.waits,
            "unmap_calls": m.unmap_calls,
            "pte_reads": m.pte_reads,
            "pte_writes": m.pte_writes,
            "fgsp": m.fgsp,
            "map_nanos": m.map_nanos,
            "map_ns_per_4k": m.map_nanos as f64 / self.pages() as f64,
            "table_bytes": m.table_bytes,
            "bookkeeping_bytes_resident": m.bookkeeping_bytes_resident,
            "bookkeeping_bytes_peak": m.bookkeeping_bytes_peak,
            "bookkeeping_bytes_per_4k": m.bookkeeping_bytes_peak as f64 / self.pages() as f64,
        })
    }
}

struct Options {
    json: bool,
    gib: u64,
    model: CostModel,
    plot: Option<String>,
    /// Only this format / backing (`--format`, `--backing`): a 1 TiB run of one case.
    format: Option<Format>,
    backing: Option<Backing>,
    /// Only these strategies (`--strategy a,b`): the default alone to measure map
    /// throughput, or the target's three at 1 TiB.
    strategy: Option<Vec<&'static str>>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        json: false,
        gib: 64,
        model: CostModel::DEFAULT,
        plot: None,
        format: None,
        backing: None,
        strategy: None,
    };
    let mut it = args.iter();
    let number = |v: Option<&String>, what: &str| {
        v.and_then(|v| v.parse::<u64>().ok())
            .ok_or(xtask::usage_error(format!("{what} needs a number")))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => o.json = true,
            "--gib" => {
                o.gib = number(it.next(), "--gib")?;
                if o.gib == 0 || o.gib > 1024 || !o.gib.is_power_of_two() {
                    return Err(xtask::usage_error(
                        "--gib must be a power of two from 1 to 1024".into(),
                    ));
                }
            }
            "--sync-ns" => o.model.sync_ns = number(it.next(), "--sync-ns")?,
            "--cmd-ns" => o.model.cmd_ns = number(it.next(), "--cmd-ns")?,
            "--plot" => {
                o.plot = Some(
                    it.next().ok_or(xtask::usage_error("--plot needs a file name".into()))?.clone(),
                )
            }
            "--format" => {
                let v =
                    it.next().ok_or(xtask::usage_error("--format needs vtd or amdv1".into()))?;
                let f = Format::ALL.into_iter().find(|f| f.name() == v);
                o.format = Some(
                    f.ok_or(xtask::usage_error(format!("--format: `{v}` is not vtd or amdv1")))?,
                );
            }
            "--backing" => {
                let v =
                    it.next().ok_or(xtask::usage_error("--backing needs a backing name".into()))?;
                let b = Backing::ALL.into_iter().find(|b| b.name() == v);
                o.backing = Some(b.ok_or(xtask::usage_error(format!(
                    "--backing: `{v}` is not 4k-contig, 4k-frag, 2m or mixed"
                )))?);
            }
            "--strategy" => {
                let v = it.next().ok_or(xtask::usage_error("--strategy needs a name".into()))?;
                let mut names = Vec::new();
                for v in v.split(',') {
                    let s = STRATEGIES.iter().find(|(_, name)| *name == v);
                    names.push(s.map(|(_, name)| *name).ok_or(xtask::usage_error(format!(
                        "--strategy: `{v}` is not page-by-page, seed-chunked, linux-fgsp, linux-2018 or default"
                    )))?);
                }
                o.strategy = Some(names);
            }
            other => return Err(xtask::usage_error(format!("bench: unknown option `{other}`"))),
        }
    }
    Ok(o)
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

/// Entry point of `cargo xtask bench [--json] [--gib N] [--sync-ns N] [--cmd-ns N]
/// [--plot FILE.svg] [--format F] [--backing B] [--strategy S] [--qemu ...]` (`--qemu` hands everything to [`crate::bench_qemu`]).
pub fn run(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--qemu") {
        return crate::bench_qemu::run(args);
    }
    let o = parse(args)?;
    if cfg!(debug_assertions) {
        return reexec_release(args);
    }
    // The plot needs every size from 1 GiB up (powers of 4, and the largest).
    let mut sizes = vec![o.gib];
    if o.plot.is_some() {
        sizes = (0..).map(|i| 1u64 << (2 * i)).take_while(|&g| g < o.gib).collect();
        sizes.push(o.gib);
    }
    let mut measured = Vec::new();
    for &gib in &sizes {
        for format in Format::ALL.into_iter().filter(|f| o.format.is_none_or(|x| x == *f)) {
            for backing in Backing::ALL.into_iter().filter(|b| o.backing.is_none_or(|x| x == *b)) {
                for strategy in STRATEGIES
                    .into_iter()
                    .filter(|s| o.strategy.as_ref().is_none_or(|x| x.contains(&s.1)))
                {
                    measured.push(cases::run(format, backing, strategy, gib)?);
                    if !o.json {
                        eprint!(".");
                    }
                }
            }
        }
    }
    if !o.json {
        eprintln!();
    }
    let rows: Vec<Row> = measured
        .iter()
        .flat_map(|m| [Row { m, model: CostModel::ZERO }, Row { m, model: o.model }])
        .collect();
    if let Some(file) = &o.plot {
        let svg = plot::svg(&rows, o.model);
        std::fs::write(file, svg).map_err(|e| format!("writing {file}: {e}"))?;
        eprintln!("plot written to {file}");
    }
    let largest: Vec<&Row> = rows.iter().filter(|r| r.m.gib == o.gib).collect();
    if o.json {
        let items: Vec<serde_json::Value> = rows.iter().map(Row::json).collect();
        println!("{}", serde_json::to_string_pretty(&items).map_err(|e| e.to_string())?);
        // The verdicts still reach the terminal, on stderr.
        eprint!("{}", targets(&largest, o.gib));
    } else {
        print_table(&largest, o.gib, o.model);
        print!("{}", targets(&largest, o.gib));
    }
    Ok(())
}

fn find<'a>(
    rows: &[&'a Row<'a>],
    f: Format,
    b: Backing,
    s: &str,
    model: bool,
) -> Option<&'a Row<'a>> {
    rows.iter().copied().find(|r| {
        r.m.format == f && r.m.backing == b && r.m.strategy == s && (r.model.sync_ns > 0) == model
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::INFINITY
    } else {
        a as f64 / b as f64
    }
}

fn print_table(rows: &[&Row], gib: u64, model: CostModel) {
    println!(
        "teardown of {gib} GiB of IOVA space; model: {} ns per completion wait (with its first command), {} ns per further command (see xtask/src/bench/cost.rs)",
        model.sync_ns, model.cmd_ns
    );
    println!(
        "{:<6} {:<10} {:<13} {:>5} {:>11} {:>11} {:>12} {:>12} {:>12} {:>12} {:>9} {:>9}",
        "format",
        "backing",
        "strategy",
        "fgsp",
        "invals",
        "waits",
        "pte reads",
        "cpu ms",
        "model ms",
        "bk peak B",
        "bk B/4k",
        "map ns/4k"
    );
    for r in rows.iter().filter(|r| r.model.sync_ns > 0 || r.model == model) {
        let m = r.m;
        println!(
            "{:<6} {:<10} {:<13} {:>5} {:>11} {:>11} {:>12} {:>12.3} {:>12.3} {:>12} {:>9.4} {:>9.2}",
            m.format.name(),
            m.backing.name(),
            m.strategy,
            m.fgsp,
            m.invalidations,
            m.waits,
            m.pte_reads,
            m.cpu_nanos as f64 / 1e6,
            r.nanos() as f64 / 1e6,
            m.bookkeeping_bytes_peak,
            m.bookkeeping_bytes_peak as f64 / r.pages() as f64,
            m.map_nanos as f64 / r.pages() as f64,
        );
    }
}

/// The targets, computed from `rows` (one size), as text.
fn targets(rows: &[&Row], gib: u64) -> String {
    let mut out = String::new();
    macro_rules! line {
        ($($t:tt)*) => {{
            out.push_str(&format!($($t)*));
            out.push('\n');
        }};
    }
    line!("\ntargets ({gib} GiB):");
    for modelled in [true, false] {
        let tag = if modelled { "with the cost model" } else { "CPU only" };
        if let (Some(d), Some(l), Some(s)) = (
            find(rows, Format::Vtd, Backing::Frag4k, "default", modelled),
            find(rows, Format::Vtd, Backing::Frag4k, "linux-2018", modelled),
            find(rows, Format::Vtd, Backing::Frag4k, "seed-chunked", modelled),
        ) {
            line!(
                "  vtd 4k-frag {tag}: default {:.1}x less time than linux-2018 (>= 10), {:.1}x less than seed-chunked (>= 100)",
                ratio(l.nanos(), d.nanos()),
                ratio(s.nanos(), d.nanos())
            );
        }
    }
    let has_amd =
        Backing::ALL.iter().any(|&b| find(rows, Format::AmdV1, b, "default", true).is_some());
    for modelled in [true, false].into_iter().filter(|_| has_amd) {
        let tag = if modelled { "with the cost model" } else { "CPU only" };
        let mut slower = Vec::new();
        for b in Backing::ALL {
            let Some(d) = find(rows, Format::AmdV1, b, "default", modelled) else { continue };
            for (_, s) in STRATEGIES.iter().filter(|(_, s)| *s != "default") {
                if let Some(o) = find(rows, Format::AmdV1, b, s, modelled) {
                    if d.nanos() > o.nanos() {
                        slower.push(format!(
                            "{} vs {s}: {:.3} ms > {:.3} ms",
                            b.name(),
                            d.nanos() as f64 / 1e6,
                            o.nanos() as f64 / 1e6
                        ));
                    }
                }
            }
        }
        let verdict = if slower.is_empty() {
            "never slower than any baseline".to_string()
        } else {
            format!("SLOWER in {}", slower.join("; "))
        };
        line!("  amdv1 default {tag}: {verdict}");
    }
    for f in Format::ALL {
        let parts: Vec<String> = Backing::ALL
            .iter()
            .filter_map(|&b| find(rows, f, b, "default", true))
            .map(|r| {
                format!(
                    "{} {:.4}",
                    r.m.backing.name(),
                    r.m.bookkeeping_bytes_peak as f64 / r.pages() as f64
                )
            })
            .collect();
        if parts.is_empty() {
            continue;
        }
        line!(
            "  {} default bookkeeping, peak bytes per 4 KiB beyond the page tables (<= 1): {}",
            f.name(),
            parts.join(", ")
        );
    }
    for f in Format::ALL {
        if find(rows, f, Backing::Contig4k, "default", true).is_none()
            && find(rows, f, Backing::Frag4k, "default", true).is_none()
        {
            continue;
        }
        // Only the backings that were run.
        let ns = |b, what: &str, limit: u32| {
            find(rows, f, b, "default", true).map(|r| {
                let per = r.m.map_nanos as f64 / r.pages() as f64;
                format!("{per:.2} ns per 4 KiB {what} (<= {limit})")
            })
        };
        let parts: Vec<String> =
            [ns(Backing::Contig4k, "contiguous", 3), ns(Backing::Frag4k, "fragmented", 80)]
                .into_iter()
                .flatten()
                .collect();
        line!("  {} map, bookkeeping included: {}", f.name(), parts.join(", "));
    }
    out
}
