//! `cargo xtask bench`: teardown benchmarks (filled in with the IOMMU core).

pub fn run(_args: &[String]) -> Result<(), String> {
    Err("bench: not built yet".into())
}
