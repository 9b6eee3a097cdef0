//! A reader for the fields of ACPICA's `iasl -d` disassembly: `[OFFh DEC LENh] Name : Value`.

/// A decoded value as the comparison sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number (ACPICA prints these in hex).
    Num(u64),
    /// A quoted string.
    Str(String),
}

/// One field line of a disassembly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Table offset.
    pub offset: usize,
    /// Field name as ACPICA prints it.
    pub name: String,
    /// The value.
    pub value: Value,
}

/// What a disassembly says, plus the markers where ACPICA stopped decoding.
#[derive(Debug, Default)]
pub struct Disassembly {
    /// The field lines, in order.
    pub fields: Vec<Field>,
    /// "Unknown IVRS subtable type 0xNN" markers.
    pub unknown_subtables: Vec<u8>,
    /// Whether ACPICA said a subtable terminates early.
    pub terminates_early: bool,
}

/// Parses the field lines of a disassembly; other lines are ignored.
pub fn parse(text: &str) -> Disassembly {
    let mut d = Disassembly::default();
    for line in text.lines() {
        if let Some(rest) = line.split("Unknown IVRS subtable type 0x").nth(1) {
            let hex: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            d.unknown_subtables.push(u8::from_str_radix(&hex, 16).expect("unknown subtable type"));
        }
        if line.contains("terminates early") {
            d.terminates_early = true;
        }
        let Some(rest) = line.strip_prefix('[') else {
            continue;
        };
        let Some((position, field)) = rest.split_once(']') else {
            continue;
        };
        let Some(hex) = position.split_whitespace().next() else {
            continue;
        };
        let Ok(offset) = usize::from_str_radix(hex.trim_end_matches('h'), 16) else {
            continue;
        };
        let Some((name, raw)) = field.split_once(" : ") else {
            continue;
        };
        let name = name.trim().to_string();
        let raw = raw.trim();
        let value = if let Some(quoted) = raw.strip_prefix('"') {
            let end = quoted.rfind('"').unwrap_or(quoted.len());
            Value::Str(quoted[..end].to_string())
        } else if name == "PCI Path" {
            let (dev, func) = raw.split_once(',').expect("PCI path pair");
            let dev = u64::from_str_radix(dev.trim(), 16).expect("path device");
            let func = u64::from_str_radix(func.trim(), 16).expect("path function");
            Value::Num((dev << 8) | func)
        } else {
            let token = raw.split_whitespace().next().unwrap_or("");
            match u64::from_str_radix(token, 16) {
                Ok(n) => Value::Num(n),
                Err(_) => Value::Str(raw.to_string()),
            }
        };
        d.fields.push(Field { offset, name, value });
    }
    d
}
