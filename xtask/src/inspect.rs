//! `cargo xtask inspect [--json] [FILE...]`: decode DMAR/IVRS tables for bring-up.
//!
//! Without FILE it reads this machine's /sys/firmware/acpi/tables/{DMAR,IVRS}. Each file is
//! recognised by its signature. The text report is the kernel's boot-log summary plus the
//! firmware sanity findings; `--json` prints one document with every decoded field (schema
//! in docs/inspect-json.md). Any file that is not a valid table makes the command fail.
//!
//! `--machine [DIR]` instead reports the whole machine (below `/`, or a tree recorded with
//! `--record DIR`): every PCI function's verdict and a configuration skeleton, as the
//! hypervisor's `mode=report` does (`xtask::machine_report`).

mod json;

use std::path::{Path, PathBuf};

use iommu::acpi::pci::PciBridge;
use iommu::acpi::resolve::{DmarUnits, IvrsUnits};
use iommu::acpi::sanity::{check_dmar, check_ivrs, PlatformFacts, SanityReport};
use iommu::acpi::summary::{dmar_summary, ivrs_summary};
use iommu::acpi::{Dmar, Ivrs};

const SYSFS_TABLES: &str = "/sys/firmware/acpi/tables";

/// A table decoded from one file.
pub enum Decoded<'a> {
    /// A DMAR table.
    Dmar(Dmar<'a>),
    /// An IVRS table.
    Ivrs(Ivrs<'a>),
}

/// Decodes a file's bytes by signature, or says clearly why it is not a valid table.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, String> {
    match bytes.get(..4) {
        Some(b"DMAR") => {
            Dmar::parse(bytes).map(Decoded::Dmar).map_err(|e| format!("invalid DMAR table: {e}"))
        }
        Some(b"IVRS") => {
            Ivrs::parse(bytes).map(Decoded::Ivrs).map_err(|e| format!("invalid IVRS table: {e}"))
        }
        Some(sig) => {
            Err(format!("not a DMAR or IVRS table (signature {:?})", String::from_utf8_lossy(sig)))
        }
        None => Err(format!("not an ACPI table ({} bytes)", bytes.len())),
    }
}

/// The sanity findings without platform facts or topology (only the table is known).
pub fn sanity(table: &Decoded<'_>) -> SanityReport {
    let facts = PlatformFacts::default();
    let no_bridges: &[PciBridge] = &[];
    match table {
        Decoded::Dmar(d) => check_dmar(d, &mut DmarUnits::new(d, no_bridges), &facts),
        Decoded::Ivrs(r) => check_ivrs(r, &mut IvrsUnits::new(r), &facts),
    }
}

fn text_report(path: &Path, table: &Decoded<'_>) -> String {
    let (header, summary) = match table {
        Decoded::Dmar(d) => (d.header(), dmar_summary(d)),
        Decoded::Ivrs(r) => (r.header(), ivrs_summary(r)),
    };
    let mut out = format!(
        "== {}: {} revision {}, {} bytes, OEM {:?} {:?} rev {:#x}, creator {:?} rev {:#x}\n",
        path.display(),
        json::text(&header.signature),
        header.revision,
        header.length,
        json::text(&header.oem_id).trim_end(),
        json::text(&header.oem_table_id).trim_end(),
        header.oem_revision,
        json::text(&header.creator_id).trim_end(),
        header.creator_revision,
    );
    for line in summary {
        out.push_str(&line);
        out.push('\n');
    }
    let report = sanity(table);
    if report.warnings.is_empty() {
        out.push_str("sanity: no findings\n");
    }
    for w in &report.warnings {
        out.push_str(&format!("sanity: {w}\n"));
    }
    out
}

fn default_files() -> Result<Vec<PathBuf>, String> {
    let found: Vec<PathBuf> = ["DMAR", "IVRS"]
        .iter()
        .map(|n| Path::new(SYSFS_TABLES).join(n))
        .filter(|p| p.exists())
        .collect();
    if found.is_empty() {
        return Err(format!(
            "this machine has no DMAR or IVRS table in {SYSFS_TABLES} (no IOMMU, or it is \
             disabled in firmware); pass table files to decode instead"
        ));
    }
    Ok(found)
}

/// `inspect`'s usage.
pub const INSPECT_USAGE: &str = "usage: cargo xtask inspect [--json] [FILE...]
       cargo xtask inspect --machine [--json] [DIR]
       cargo xtask inspect --record DIR

  FILE...          decode these DMAR/IVRS tables (default: this machine's)
  --machine [DIR]  report the machine (default /, or a recorded tree): every PCI function,
                   the IOMMU unit and requester id its DMA carries, whether it can be
                   assigned and why not, and a partition configuration skeleton
  --record DIR     copy what --machine reads from this machine to DIR
  --json           JSON (tables: docs/inspect-json.md; machine: docs/report-json.md)";

fn print_lines(lines: Vec<String>) -> Result<(), String> {
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// Runs `inspect` with the arguments after the subcommand name.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut as_json = false;
    let mut files = Vec::new();
    let mut machine = false;
    let mut record = false;
    for a in args {
        match a.as_str() {
            "--json" => as_json = true,
            "--machine" => machine = true,
            "--record" => record = true,
            "-h" | "--help" => {
                println!("{INSPECT_USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => {
                return Err(xtask::usage_error(format!("inspect: unknown option {flag}")))
            }
            file => files.push(PathBuf::from(file)),
        }
    }
    if machine || record {
        let [dir] = files.as_slice() else {
            if record || files.len() > 1 {
                return Err(format!(
                    "{} takes one directory\n{INSPECT_USAGE}",
                    if record { "--record" } else { "--machine" }
                ));
            }
            return print_lines(xtask::machine_report::report(Path::new("/"), as_json)?);
        };
        if record {
            let n = xtask::sysfs::record(Path::new("/"), dir)?;
            println!("recorded {n} files of this machine below {}", dir.display());
            return Ok(());
        }
        return print_lines(xtask::machine_report::report(dir, as_json)?);
    }
    if files.is_empty() {
        files = default_files()?;
    }
    let mut errors = Vec::new();
    let mut documents = Vec::new();
    for path in &files {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (reading the firmware's ACPI tables needs root)"
                } else {
                    ""
                };
                errors.push(format!("{}: cannot read: {e}{hint}", path.display()));
                continue;
            }
        };
        match decode(&bytes) {
            Ok(table) if as_json => documents.push(json::table(path, &table)),
            Ok(table) => print!("{}", text_report(path, &table)),
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    if as_json {
        let doc = json::document(documents);
        println!("{}", serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}
