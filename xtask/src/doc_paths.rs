//! Every repository path the documentation names must exist: a doc that points at a file
//! which was moved, renamed or never shipped (such as notes kept outside the repository)
//! sends a reader nowhere. `cargo xtask test` checks every Markdown file of the repository
//! (the tests below); [`missing_paths`] is the check.
//!
//! A path is a backticked span or a Markdown link target made of path characters with at
//! least one `/`, not absolute (`/sys/...`), not in the home folder (`~/...`), not a URL,
//! with no placeholder (`...`, `*`, `{`, words in capitals such as `SUITE` or `RELEASE`),
//! and not one of [`NOT_OURS`] (build output, QEMU's and Linux's source files). One that
//! starts with a top-level folder of the repository (`kernel/src/mem/frames.rs`, `docs/`)
//! must exist there; any other (`pgtable/vtd.rs`, `partition/svm.rs`, named relative to a
//! crate's source folder) must be the tail of some file or folder of the repository.

use std::path::{Path, PathBuf};

/// Folders never searched: build output and version control.
const SKIPPED: &[&str] = &["target", ".git"];

/// Paths the docs may name that are not in the repository: what a build writes
/// (`target/...`), and files of the projects the docs cite, QEMU (`hw/i386/intel_iommu.c`)
/// and Linux (`drivers/iommu/...`).
const NOT_OURS: &[&str] = &["target/", "hw/", "drivers/"];

/// The candidate paths `markdown` names, in order (backticked spans and link targets).
pub fn named_paths(markdown: &str) -> Vec<&str> {
    let mut out = Vec::new();
    // Backticked spans: the text between each pair of backticks.
    for (i, span) in markdown.split('`').enumerate() {
        if i % 2 == 1 && looks_like_path(span) {
            out.push(span);
        }
    }
    // Link targets: `](target)`.
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            let target = rest[..end].split('#').next().unwrap_or("");
            if looks_like_path(target) {
                out.push(target);
            }
        }
    }
    out
}

/// Whether `s` names a repository path (see the module documentation).
fn looks_like_path(s: &str) -> bool {
    let path_chars = s.chars().all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c));
    // A word in capitals stands for a value (`SUITE`, `vmlinuz-RELEASE`); `README.md` is
    // no placeholder (words are split at `/`, `-` and `_`, not at the extension's dot).
    let placeholder = s.contains("..")
        || s.split(['/', '-', '_'])
            .any(|word| word.len() > 1 && word.chars().all(|c| c.is_ascii_uppercase()));
    !s.is_empty()
        && !NOT_OURS.iter().any(|p| s.starts_with(p))
        && path_chars
        && s.contains('/')
        && !s.starts_with('/')
        && !s.starts_with('.')
        && !s.contains("//")
        && !placeholder
}

/// Every file and folder under `root` as a `/`-separated relative path.
fn all_paths(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&rel)) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.as_os_str().is_empty() && SKIPPED.contains(&name.as_str()) {
                continue;
            }
            let child = rel.join(&name);
            out.push(child.to_string_lossy().replace('\\', "/"));
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(child);
            }
        }
    }
    out
}

/// The paths `markdown` names that do not exist in the repository at `root`.
pub fn missing_paths(root: &Path, markdown: &str) -> Vec<String> {
    let tops: Vec<String> = std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let everything = all_paths(root);
    let mut missing = Vec::new();
    for p in named_paths(markdown) {
        let trimmed = p.trim_end_matches('/');
        let first = trimmed.split('/').next().unwrap_or("");
        let found = if tops.iter().any(|t| t == first) {
            root.join(trimmed).exists()
        } else {
            everything.iter().any(|e| e == trimmed || e.ends_with(&format!("/{trimmed}")))
        };
        if !found && !missing.iter().any(|m| m == p) {
            missing.push(p.to_string());
        }
    }
    missing
}

/// Every Markdown file of the repository at `root`.
pub fn markdown_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        all_paths(root).into_iter().filter(|p| p.ends_with(".md")).map(|p| root.join(p)).collect();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        crate::build::workspace_root()
    }

    #[test]
    fn every_path_the_docs_name_exists() {
        let files = markdown_files(&root());
        // The README and the docs folder at least: a checker that finds no file checks nothing.
        assert!(files.iter().any(|f| f.ends_with("README.md")), "no README found");
        assert!(files.iter().any(|f| f.ends_with("docs/architecture.md")), "no docs found");
        let mut problems = Vec::new();
        for f in &files {
            let text =
                std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            for p in missing_paths(&root(), &text) {
                let shown = f.strip_prefix(root()).unwrap_or(f).display().to_string();
                problems.push(format!("{shown}: names `{p}`, which does not exist"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The control: a made-up doc naming paths that do not exist is caught, and the same
    /// doc naming real ones is not.
    #[test]
    fn a_doc_naming_a_missing_path_is_caught() {
        let doc = "See `kernel/src/mem/frames.rs`, `docs/`, `pgtable/vtd.rs` and \
                   [the glossary](docs/glossary.md#terms); also `kernel/src/no_such_file.rs`, \
                   `shared/notes`, `tests/tests/gone.rs` and [gone](docs/gone.md). \
                   `iommu/fuzz/README.md`, `boot/fuzz/NOTES.md`. Not paths: `/sys/bus/pci`, \
                   `~/.cache/x`, `a b/c`, `target/test-logs/SUITE/TEST.log`, `boot/vmlinuz-RELEASE`, \
                   `0xFEE0_0000`, `https://example.org/x`.";
        let missing = missing_paths(&root(), doc);
        assert_eq!(
            missing,
            [
                "kernel/src/no_such_file.rs",
                "shared/notes",
                "tests/tests/gone.rs",
                "boot/fuzz/NOTES.md",
                "docs/gone.md"
            ]
        );
    }

    #[test]
    fn finds_backticked_spans_and_link_targets() {
        let doc = "a `boot/src/info.rs` b `not a path` c [x](docs/qemu.md) `x86_64-unknown-none`";
        assert_eq!(named_paths(doc), ["boot/src/info.rs", "docs/qemu.md"]);
    }
}
