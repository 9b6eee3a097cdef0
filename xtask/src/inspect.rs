//! `cargo xtask inspect`: decode DMAR/IVRS tables (filled in with the parsers).

pub fn run(_args: &[String]) -> Result<(), String> {
    Err("inspect: not built yet".into())
}
