//! `cargo xtask bench --qemu`: the teardown benchmark on QEMU's emulated IOMMUs. Boots the
//! hypervisor with the in-kernel `bench_teardown` test (1 GiB of 4 KiB mappings torn
//! down by the DMA tracker with each unmap strategy, invalidations executed by the unit),
//! reads its `bench_teardown:` lines and prints them side by side with ratios.

use std::time::Duration;
use xtask::qemu::{self, Iommu, Machine, Verdict};

/// One strategy's costs as the kernel printed them (scaled to `bytes` when measured on
/// less).
#[derive(Debug, Clone, PartialEq)]
struct Row {
    unit: String,
    strategy: String,
    bytes: u64,
    measured_bytes: u64,
    unmap_calls: u64,
    invalidations: u64,
    tracker_invalidations: u64,
    syncs: u64,
    tsc: u64,
}

impl Row {
    /// Parses `bench_teardown: key=value ...`; `None` for any other line.
    fn parse(line: &str) -> Option<Row> {
        let rest = line.trim().strip_prefix("bench_teardown:")?;
        let get = |key: &str| {
            rest.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        let num = |key: &str| get(key)?.parse::<u64>().ok();
        let mut row = Row {
            unit: get("unit")?.to_string(),
            strategy: get("strategy")?.to_string(),
            bytes: num("bytes")?,
            measured_bytes: num("measured_bytes")?,
            unmap_calls: num("unmap_calls")?,
            invalidations: num("invalidations")?,
            tracker_invalidations: num("tracker_invalidations")?,
            syncs: num("syncs")?,
            tsc: num("tsc")?,
        };
        if row.measured_bytes == 0 || row.measured_bytes > row.bytes {
            return None;
        }
        if row.measured_bytes < row.bytes {
            // Page-by-page costs are linear in pages: scale to the full range.
            let f = row.bytes / row.measured_bytes;
            for v in [
                &mut row.unmap_calls,
                &mut row.invalidations,
                &mut row.tracker_invalidations,
                &mut row.syncs,
                &mut row.tsc,
            ] {
                *v *= f;
            }
        }
        Some(row)
    }

    fn scaled(&self) -> bool {
        self.measured_bytes < self.bytes
    }
}

/// Boots one machine with `iommu` and returns its rows.
fn run_unit(kernel: &std::path::Path, iommu: Iommu) -> Result<Vec<Row>, String> {
    let mut m = Machine::new(kernel, iommu);
    m.memory_mib = 3072;
    m.cmdline = "test=bench_teardown".into();
    m.timeout = Duration::from_secs(600);
    let out = qemu::run(&m, false)?;
    if out.verdict != Verdict::Success {
        return Err(format!("bench_teardown: {}\n{}", out.describe(), out.log));
    }
    let rows: Vec<Row> = out.log.lines().filter_map(Row::parse).collect();
    if rows.is_empty() {
        return Err(format!("no bench_teardown lines in the log\n{}", out.log));
    }
    eprintln!("{:?}: {} strategies in {:.1?}", m.iommu, rows.len(), out.elapsed);
    Ok(rows)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::INFINITY
    } else {
        a as f64 / b as f64
    }
}

fn print_table(rows: &[Row]) {
    println!("teardown of 1 GiB of 4 KiB mappings (contiguous backing) on QEMU's emulated IOMMU, invalidations executed by the unit");
    println!(
        "{:<7} {:<13} {:>10} {:>10} {:>10} {:>14} {:>10} {:>10}",
        "unit", "strategy", "unmaps", "invals", "waits", "TSC cycles", "inv/pbp", "x pbp"
    );
    for r in rows {
        let pbp = rows.iter().find(|p| p.unit == r.unit && p.strategy == "page-by-page");
        let (inv, time) = pbp.map_or((f64::NAN, f64::NAN), |p| {
            (ratio(p.invalidations, r.invalidations), ratio(p.tsc, r.tsc))
        });
        println!(
            "{:<7} {:<13} {:>10} {:>10} {:>10} {:>14} {:>10.0} {:>10.1}{}",
            r.unit,
            r.strategy,
            r.unmap_calls,
            r.invalidations,
            r.syncs,
            r.tsc,
            inv,
            time,
            if r.scaled() {
                format!("  (measured on {} MiB, scaled)", r.measured_bytes >> 20)
            } else {
                String::new()
            }
        );
    }
    println!(
        "\ntarget (issue 5): default issues at least 1000x fewer invalidations than page-by-page"
    );
    let units: Vec<&str> = {
        let mut u: Vec<&str> = rows.iter().map(|r| r.unit.as_str()).collect();
        u.dedup();
        u
    };
    for unit in units {
        let find = |s: &str| rows.iter().find(|r| r.unit == unit && r.strategy == s);
        if let (Some(d), Some(p)) = (find("default"), find("page-by-page")) {
            let x = ratio(p.invalidations, d.invalidations);
            println!(
                "  {unit}: {x:.0}x fewer invalidations ({} vs {}), {:.0}x fewer TSC cycles: {}",
                d.invalidations,
                p.invalidations,
                ratio(p.tsc, d.tsc),
                if x >= 1000.0 { "met" } else { "NOT met" }
            );
        }
    }
}

fn print_json(rows: &[Row]) {
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"unit\":\"{}\",\"strategy\":\"{}\",\"bytes\":{},\"measured_bytes\":{},\"unmap_calls\":{},\
                 \"invalidations\":{},\"tracker_invalidations\":{},\"syncs\":{},\"tsc\":{}}}",
                r.unit,
                r.strategy,
                r.bytes,
                r.measured_bytes,
                r.unmap_calls,
                r.invalidations,
                r.tracker_invalidations,
                r.syncs,
                r.tsc
            )
        })
        .collect();
    println!("[\n  {}\n]", items.join(",\n  "));
}

/// Entry point of `cargo xtask bench --qemu [--iommu intel|amd] [--json] [--debug]`
/// (both IOMMUs unless one is named; the release kernel unless `--debug`).
pub fn run(args: &[String]) -> Result<(), String> {
    let mut json = false;
    let mut release = true;
    let mut units = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--qemu" => {}
            "--json" => json = true,
            "--debug" => release = false,
            "--iommu" => {
                let v = it.next().ok_or("--iommu needs intel or amd")?;
                match Iommu::parse(v)? {
                    Iommu::None => return Err("bench --qemu needs an IOMMU".into()),
                    i => units.push(i),
                }
            }
            other => return Err(format!("bench --qemu: unknown option `{other}`")),
        }
    }
    if units.is_empty() {
        units = vec![
            Iommu::Intel { aw_bits: None, caching_mode: false },
            Iommu::Amd { intremap: false },
        ];
    }
    let kernel = xtask::build::kernel(release)?;
    let mut rows = Vec::new();
    for u in units {
        rows.extend(run_unit(&kernel, u)?);
    }
    if json {
        print_json(&rows);
    } else {
        print_table(&rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Row;

    #[test]
    fn parses_and_scales_a_partial_measurement() {
        let line = "bench_teardown: unit=VT-d strategy=page-by-page bytes=1073741824 measured_bytes=268435456 unmap_calls=65536 invalidations=65536 tracker_invalidations=65536 syncs=65536 tsc=1000";
        let r = Row::parse(line).unwrap();
        assert_eq!((r.unmap_calls, r.invalidations, r.tsc), (262144, 262144, 4000));
        assert!(r.scaled());
        assert_eq!(Row::parse("[INFO ] boot complete"), None);
        assert_eq!(Row::parse("bench_teardown: unit=VT-d strategy=x bytes=1"), None);
    }
}
