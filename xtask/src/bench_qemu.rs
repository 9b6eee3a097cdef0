//! `cargo xtask bench --qemu`: the teardown benchmark on QEMU's emulated IOMMUs. Boots the
//! hypervisor with the in-kernel `bench_teardown` test (1 GiB of 4 KiB mappings torn
//! down by the DMA tracker with each unmap strategy, invalidations executed by the unit),
//! reads its `bench_teardown:` lines and prints them side by side with ratios; and the
//! same for partition teardown (`bench_partition_teardown`: a 1 GiB partition's memory,
//! 4K- and 2M-backed, unmapped through its tracker with each strategy), and partition
//! destroy latency against time-to-memory-reusable (`bench_partition_destroy`).

use std::time::Duration;

use crate::bench_destroy::{self, DestroyRow};
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

/// One partition-teardown case as the kernel printed it.
#[derive(Debug, Clone, PartialEq)]
struct PartitionRow {
    unit: String,
    backing: String,
    strategy: String,
    bytes: u64,
    invalidations: u64,
    unmap_calls: u64,
    cycles: u64,
}

impl PartitionRow {
    /// Parses `bench partition_teardown key=value ...`; `None` for any other line.
    fn parse(unit: &str, line: &str) -> Option<PartitionRow> {
        let rest = line.trim().strip_prefix("bench partition_teardown ")?;
        let get = |key: &str| {
            rest.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        let num = |key: &str| get(key)?.parse::<u64>().ok();
        Some(PartitionRow {
            unit: unit.to_string(),
            backing: get("backing")?.to_string(),
            strategy: get("strategy")?.to_string(),
            bytes: num("bytes")?,
            invalidations: num("invalidations")?,
            unmap_calls: num("unmap_calls")?,
            cycles: num("cycles")?,
        })
    }
}

fn print_partition_table(rows: &[PartitionRow]) {
    println!("\npartition teardown (1 GiB of guest memory unmapped through its tracker; invalidations include the device block)");
    println!(
        "{:<7} {:<8} {:<13} {:>10} {:>10} {:>14} {:>10}",
        "unit", "backing", "strategy", "unmaps", "invals", "TSC cycles", "x pbp"
    );
    for r in rows {
        let pbp = rows
            .iter()
            .find(|p| p.unit == r.unit && p.backing == r.backing && p.strategy == "page-by-page");
        println!(
            "{:<7} {:<8} {:<13} {:>10} {:>10} {:>14} {:>10.1}",
            r.unit,
            r.backing,
            r.strategy,
            r.unmap_calls,
            r.invalidations,
            r.cycles,
            pbp.map_or(f64::NAN, |p| ratio(p.cycles, r.cycles))
        );
    }
}

/// Boots one machine with `iommu` and returns its domain and partition rows.
type UnitRows = (Vec<Row>, Vec<PartitionRow>, Vec<DestroyRow>);

fn run_unit(kernel: &std::path::Path, iommu: Iommu) -> Result<UnitRows, String> {
    let mut m = Machine::new(kernel, iommu);
    m.memory_mib = 3072;
    m.cmdline = "test=bench_teardown,bench_partition_teardown,bench_partition_destroy".into();
    m.timeout = Duration::from_secs(600);
    let out = qemu::run(&m, false)?;
    if out.verdict != Verdict::Success {
        return Err(format!("bench_teardown: {}\n{}", out.describe(), out.log));
    }
    let rows: Vec<Row> = out.log.lines().filter_map(Row::parse).collect();
    if rows.is_empty() {
        return Err(format!("no bench_teardown lines in the log\n{}", out.log));
    }
    let unit = rows[0].unit.clone();
    let parts: Vec<PartitionRow> =
        out.log.lines().filter_map(|l| PartitionRow::parse(&unit, l)).collect();
    eprintln!("{:?}: {} + {} cases in {:.1?}", m.iommu, rows.len(), parts.len(), out.elapsed);
    let destroys: Vec<DestroyRow> =
        out.log.lines().filter_map(|l| DestroyRow::parse(&unit, l)).collect();
    Ok((rows, parts, destroys))
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

fn print_json(rows: &[Row], parts: &[PartitionRow], destroys: &[DestroyRow]) {
    let mut items: Vec<String> = rows
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
    items.extend(parts.iter().map(|r| {
        format!(
            "{{\"bench\":\"partition_teardown\",\"unit\":\"{}\",\"backing\":\"{}\",\"strategy\":\"{}\",\
             \"bytes\":{},\"unmap_calls\":{},\"invalidations\":{},\"tsc\":{}}}",
            r.unit, r.backing, r.strategy, r.bytes, r.unmap_calls, r.invalidations, r.cycles
        )
    }));
    items.extend(destroys.iter().map(DestroyRow::json));
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
            Iommu::Amd { intremap: true },
        ];
    }
    let kernel = xtask::build::kernel(release)?;
    let (mut rows, mut parts, mut destroys) = (Vec::new(), Vec::new(), Vec::new());
    for u in units {
        let (r, p, d) = run_unit(&kernel, u)?;
        rows.extend(r);
        parts.extend(p);
        destroys.extend(d);
    }
    if json {
        print_json(&rows, &parts, &destroys);
    } else {
        print_table(&rows);
        print_partition_table(&parts);
        bench_destroy::print(&destroys);
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
        let p = "bench partition_teardown backing=2m strategy=default bytes=1073741824 extents=1 iommu_pages=largest fgsp=false invalidations=3 unmap_calls=1 flushes=1 tracker_invalidations=1 cycles=900000 map_cycles=5";
        let r = super::PartitionRow::parse("VT-d", p).unwrap();
        assert_eq!((r.backing.as_str(), r.invalidations, r.cycles), ("2m", 3, 900_000));
    }
}
