//! Shared helpers of the corpus tests: finding the tables and reading ACPICA's disassembly.
#![allow(dead_code)]

pub mod dsl;

use std::path::{Path, PathBuf};

/// The corpus directory for `kind` ("dmar" or "ivrs").
pub fn corpus_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(kind)
}

/// Every `.bin` table of one corpus directory, sorted, with its stem.
pub fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(kind))
        .expect("corpus directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (stem, std::fs::read(&p).expect("read table"))
        })
        .collect()
}
