//! `cargo xtask inspect` over the whole corpus: text and JSON run clean, the JSON validates
//! against the schema in docs/inspect-json.md, and invalid input fails without a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = root().join("iommu/testdata").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    files
}

fn inspect(args: &[&str], files: &[PathBuf]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("inspect")
        .args(args)
        .args(files)
        .output()
        .expect("run xtask")
}

/// The JSON Schema block between the schema markers of docs/inspect-json.md.
fn documented_schema() -> Value {
    let doc = std::fs::read_to_string(root().join("docs/inspect-json.md")).unwrap();
    let start = doc.find("<!-- schema:begin -->").expect("schema begin marker");
    let end = doc.find("<!-- schema:end -->").expect("schema end marker");
    let block = &doc[start..end];
    let json = block
        .split_once("```json")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(json, _)| json)
        .expect("fenced json block");
    serde_json::from_str(json).expect("schema is valid JSON")
}

/// A validator for the JSON Schema subset the document uses; returns the first violation.
struct Validator<'a> {
    root: &'a Value,
}

impl Validator<'_> {
    fn check(&self, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        let s = schema.as_object().ok_or(format!("{at}: schema not an object"))?;
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.strip_prefix("#/$defs/").ok_or(format!("bad $ref {r}"))?;
            let target = &self.root["$defs"][name];
            if target.is_null() {
                return Err(format!("{at}: unknown $ref {r}"));
            }
            return self.check(target, v, at);
        }
        if let Some(c) = s.get("const") {
            if c != v {
                return Err(format!("{at}: {v} is not {c}"));
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            if !e.contains(v) {
                return Err(format!("{at}: {v} not in {e:?}"));
            }
        }
        if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
            let matching = alts.iter().filter(|a| self.check(a, v, at).is_ok()).count();
            if matching != 1 {
                let why: Vec<String> =
                    alts.iter().filter_map(|a| self.check(a, v, at).err()).collect();
                return Err(format!("{at}: {matching} oneOf alternatives match: {why:?}"));
            }
        }
        if let Some(t) = s.get("type") {
            let types: Vec<&str> = match t {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => return Err(format!("{at}: bad type in schema")),
            };
            let ok = types.iter().any(|t| match *t {
                "object" => v.is_object(),
                "array" => v.is_array(),
                "string" => v.is_string(),
                "integer" => v.is_u64() || v.is_i64(),
                "boolean" => v.is_boolean(),
                "null" => v.is_null(),
                _ => false,
            });
            if !ok {
                return Err(format!("{at}: {v} is not of type {types:?}"));
            }
        }
        if s.get("format").and_then(Value::as_str) == Some("hex") {
            let text = v.as_str().unwrap_or("");
            let digits = text.strip_prefix("0x").unwrap_or("");
            if digits.is_empty()
                || !digits.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            {
                return Err(format!("{at}: {v} is not a 0x hex string"));
            }
        }
        if let Some(obj) = v.as_object() {
            let props = s.get("properties").and_then(Value::as_object);
            for req in s.get("required").and_then(Value::as_array).into_iter().flatten() {
                let key = req.as_str().unwrap_or("");
                if !obj.contains_key(key) {
                    return Err(format!("{at}: missing required key {key}"));
                }
            }
            for (k, val) in obj {
                match props.and_then(|p| p.get(k)) {
                    Some(sub) => self.check(sub, val, &format!("{at}.{k}"))?,
                    None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{at}: undocumented key {k}"))
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, item) in arr.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }
}

fn validate(doc: &Value) -> Result<(), String> {
    let schema = documented_schema();
    Validator { root: &schema }.check(&schema, doc, "$")
}

#[test]
fn text_report_runs_clean_over_the_corpus() {
    for kind in ["dmar", "ivrs"] {
        let files = corpus(kind);
        let out = inspect(&[], &files);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(stdout.matches("\n== ").count() + 1, files.len());
        let unit = if kind == "dmar" { "DRHD 0: base 0x" } else { "IVHD 0: type 0x" };
        assert_eq!(stdout.matches(unit).count(), files.len(), "{kind}: one unit 0 per table");
    }
}

#[test]
fn json_over_the_corpus_validates_against_the_documented_schema() {
    let mut files = corpus("dmar");
    files.extend(corpus("ivrs"));
    let out = inspect(&["--json"], &files);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    validate(&doc).unwrap();
    let tables = doc["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 501);
    // Spot checks of decoded values against the corpus (the QEMU-shaped first DMAR).
    let first = &tables[0];
    assert_eq!(first["signature"], "DMAR");
    assert_eq!(first["structures"][0]["base"], "0xfed90000");
    assert_eq!(first["structures"][0]["scopes"][0]["path_text"], "00:02.0");
    let lenovo = tables
        .iter()
        .find(|t| t["file"].as_str().unwrap().ends_with("ivrs-405067a82a69.bin"))
        .unwrap();
    let blocks = lenovo["blocks"].as_array().unwrap();
    assert_eq!(blocks.last().unwrap()["type"], "unknown");
    assert_eq!(blocks.last().unwrap()["type_code"], 0x51);
    assert_eq!(lenovo["preferred_ivhd_type"], 0x40);
}

#[test]
fn the_validator_rejects_wrong_shapes() {
    let good = serde_json::json!({ "schema": "iommu-inspect/1", "tables": [] });
    validate(&good).unwrap();
    let cases = [
        serde_json::json!({ "schema": "iommu-inspect/2", "tables": [] }),
        serde_json::json!({ "schema": "iommu-inspect/1" }),
        serde_json::json!({ "schema": "iommu-inspect/1", "tables": [], "extra": 1 }),
        serde_json::json!({ "schema": "iommu-inspect/1", "tables": [{ "signature": "DMAR" }] }),
    ];
    for bad in cases {
        assert!(validate(&bad).is_err(), "{bad} should not validate");
    }
    // A real table with one field of the wrong type.
    let out = inspect(&["--json"], &corpus("dmar")[..1]);
    let mut doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    validate(&doc).unwrap();
    doc["tables"][0]["structures"][0]["base"] = Value::from(0xfed9_0000u64);
    assert!(validate(&doc).is_err());
}

#[test]
fn invalid_files_fail_clearly_without_a_panic() {
    let dir = std::env::temp_dir().join(format!("inspect-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(&corpus("dmar")[0]).unwrap();
    let mut bad_checksum = good.clone();
    bad_checksum[9] ^= 0xff;
    let mut bad_length = good.clone();
    bad_length[50] = 0;
    bad_length[51] = 0;
    bad_length[9] = 0;
    let sum = bad_length.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    bad_length[9] = 0u8.wrapping_sub(sum);
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("garbage.bin", b"hello, world".to_vec(), "not a DMAR or IVRS table"),
        ("short.bin", b"DM".to_vec(), "not an ACPI table"),
        ("checksum.bin", bad_checksum, "checksum invalid"),
        ("length.bin", bad_length, "at offset 0x32"),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = inspect(&[], std::slice::from_ref(&path));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert!(stderr.contains(needle), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    let out = inspect(&[], &[dir.join("missing.bin")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    std::fs::remove_dir_all(&dir).unwrap();
}
