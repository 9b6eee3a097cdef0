//! The `bench partition_destroy` lines of `cargo xtask bench --qemu`: a 1 GiB partition's
//! destroy latency (devices quiesced and blocked, mappings gone, memory back dirty)
//! against the time until its memory is reusable (scrubbed), and against a destroy that
//! scrubs synchronously (what every destroy did before the scrub moved off its path).

/// One backing's destroy costs, as the kernel printed them (TSC cycles).
#[derive(Debug, Clone, PartialEq)]
pub struct DestroyRow {
    pub unit: String,
    pub backing: String,
    pub bytes: u64,
    pub destroy_cycles: u64,
    pub reusable_cycles: u64,
    pub sync_scrub_destroy_cycles: u64,
}

impl DestroyRow {
    /// Parses `bench partition_destroy key=value ...`; `None` for any other line.
    pub fn parse(unit: &str, line: &str) -> Option<DestroyRow> {
        let rest = line.trim().strip_prefix("bench partition_destroy ")?;
        let get = |key: &str| {
            rest.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        let num = |key: &str| get(key)?.parse::<u64>().ok();
        Some(DestroyRow {
            unit: unit.to_string(),
            backing: get("backing")?.to_string(),
            bytes: num("bytes")?,
            destroy_cycles: num("destroy_cycles")?,
            reusable_cycles: num("reusable_cycles")?,
            sync_scrub_destroy_cycles: num("sync_scrub_destroy_cycles")?,
        })
    }

    /// As one JSON object.
    pub fn json(&self) -> String {
        format!(
            "{{\"bench\":\"partition_destroy\",\"unit\":\"{}\",\"backing\":\"{}\",\"bytes\":{},\"destroy_cycles\":{},\"reusable_cycles\":{},\"sync_scrub_destroy_cycles\":{}}}",
            self.unit, self.backing, self.bytes, self.destroy_cycles, self.reusable_cycles, self.sync_scrub_destroy_cycles
        )
    }
}

/// The table, with the target (destroy latency at most 1/10 of a synchronous-scrub destroy).
pub fn print(rows: &[DestroyRow]) {
    println!("\npartition destroy (1 GiB, edu assigned; TSC cycles): destroy returns with memory dirty, reusable once scrubbed");
    println!(
        "{:<7} {:<8} {:>16} {:>16} {:>22} {:>10}",
        "unit", "backing", "destroy", "reusable", "destroy+sync scrub", "ratio"
    );
    for r in rows {
        let ratio = r.destroy_cycles as f64 / r.sync_scrub_destroy_cycles.max(1) as f64;
        println!(
            "{:<7} {:<8} {:>16} {:>16} {:>22} {:>10.3}{}",
            r.unit,
            r.backing,
            r.destroy_cycles,
            r.reusable_cycles,
            r.sync_scrub_destroy_cycles,
            ratio,
            if r.backing == "4k" {
                if ratio <= 0.1 {
                    "  (<= 0.1: met)"
                } else {
                    "  (<= 0.1: NOT met)"
                }
            } else {
                ""
            }
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_destroy_line() {
        let l = "bench partition_destroy backing=4k bytes=1073741824 destroy_cycles=10 reusable_cycles=90 dirty_frames=262144 sync_scrub_destroy_cycles=100 invalidations=3";
        let r = super::DestroyRow::parse("VT-d", l).unwrap();
        assert_eq!(
            (r.destroy_cycles, r.reusable_cycles, r.sync_scrub_destroy_cycles),
            (10, 90, 100)
        );
        assert_eq!(super::DestroyRow::parse("VT-d", "bench partition_teardown x=1"), None);
    }
}
