//! The `--json` document of `cargo xtask inspect` (schema: docs/inspect-json.md).

use std::path::Path;

use iommu::acpi::dmar::{
    DmarStructure, ATSR_ALL_PORTS, DMAR_FLAG_DMA_CTRL_OPT_IN, DMAR_FLAG_INTR_REMAP,
    DMAR_FLAG_X2APIC_OPT_OUT, SATC_ATC_REQUIRED,
};
use iommu::acpi::ivrs::{Ivhd, Ivmd, IvmdTarget, IvrsBlock};
use iommu::acpi::ivrs_entry::{AcpiUid, DeviceEntry, EntryBody};
use iommu::acpi::pci::Bdf;
use iommu::acpi::resolve::IvrsUnit;
use iommu::acpi::sanity::Severity;
use iommu::acpi::scope::DeviceScopes;
use iommu::acpi::summary::{dmar_summary, ivrs_summary, PathDisplay};
use iommu::acpi::{Dmar, Ivrs, SdtHeader};
use serde_json::{json, Value};

use super::{sanity, Decoded};

/// The schema identifier; bumped on any incompatible change.
pub const SCHEMA: &str = "iommu-inspect/1";

/// The whole document for the decoded tables.
pub fn document(tables: Vec<Value>) -> Value {
    json!({ "schema": SCHEMA, "tables": tables })
}

fn hex(v: u64) -> Value {
    Value::String(format!("{v:#x}"))
}

/// Bytes up to the first NUL, lossily as text.
pub fn text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn header(h: &SdtHeader, checksum_ok: bool) -> Value {
    json!({
        "signature": text(&h.signature),
        "length": h.length,
        "revision": h.revision,
        "checksum": h.checksum,
        "checksum_ok": checksum_ok,
        "oem_id": text(&h.oem_id),
        "oem_table_id": text(&h.oem_table_id),
        "oem_revision": h.oem_revision,
        "creator_id": text(&h.creator_id),
        "creator_revision": h.creator_revision,
    })
}

fn flag_names(flags: u8, names: &[(u8, &'static str)]) -> Vec<&'static str> {
    names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect()
}

fn scopes(list: DeviceScopes<'_>) -> Value {
    list.map(|s| {
        json!({
            "offset": s.offset,
            "type": s.kind.name(),
            "type_code": s.kind.raw(),
            "length": s.length,
            "flags": s.flags,
            "enumeration_id": s.enumeration_id,
            "start_bus": s.start_bus,
            "path": s.path.hops().map(|(d, f)| json!([d, f])).collect::<Vec<_>>(),
            "path_text": PathDisplay(&s).to_string(),
        })
    })
    .collect()
}

fn dmar_structure(s: DmarStructure<'_>) -> Value {
    match s {
        DmarStructure::Drhd(d) => json!({
            "type": "drhd", "type_code": 0, "offset": d.offset, "length": d.length,
            "flags": d.flags, "include_pci_all": d.include_pci_all(), "size": d.size,
            "register_size": d.register_size(), "segment": d.segment, "base": hex(d.base),
            "scopes": scopes(d.scopes),
        }),
        DmarStructure::Rmrr(r) => json!({
            "type": "rmrr", "type_code": 1, "offset": r.offset, "length": r.length,
            "segment": r.segment, "base": hex(r.base), "limit": hex(r.limit),
            "scopes": scopes(r.scopes),
        }),
        DmarStructure::Atsr(a) => json!({
            "type": "atsr", "type_code": 2, "offset": a.offset, "length": a.length,
            "flags": a.flags, "all_ports": a.flags & ATSR_ALL_PORTS != 0,
            "segment": a.segment, "scopes": scopes(a.scopes),
        }),
        DmarStructure::Rhsa(r) => json!({
            "type": "rhsa", "type_code": 3, "offset": r.offset, "length": r.length,
            "base": hex(r.base), "proximity_domain": r.proximity_domain,
        }),
        DmarStructure::Andd(a) => json!({
            "type": "andd", "type_code": 4, "offset": a.offset, "length": a.length,
            "device_number": a.device_number, "name": text(a.name),
        }),
        DmarStructure::Satc(s) => json!({
            "type": "satc", "type_code": 5, "offset": s.offset, "length": s.length,
            "flags": s.flags, "atc_required": s.flags & SATC_ATC_REQUIRED != 0,
            "segment": s.segment, "scopes": scopes(s.scopes),
        }),
        DmarStructure::Sidp(s) => json!({
            "type": "sidp", "type_code": 6, "offset": s.offset, "length": s.length,
            "segment": s.segment, "scopes": scopes(s.scopes),
        }),
        DmarStructure::Unknown { kind, offset, length } => json!({
            "type": "unknown", "type_code": kind, "offset": offset, "length": length,
        }),
    }
}

fn entry_name(e: &DeviceEntry<'_>) -> &'static str {
    match e.body {
        EntryBody::Padding => "padding",
        EntryBody::All => "all",
        EntryBody::Select => "select",
        EntryBody::RangeStart => "range-start",
        EntryBody::RangeEnd => "range-end",
        EntryBody::AliasSelect { .. } => "alias-select",
        EntryBody::AliasRangeStart { .. } => "alias-range-start",
        EntryBody::ExtendedSelect { .. } => "extended-select",
        EntryBody::ExtendedRangeStart { .. } => "extended-range-start",
        EntryBody::Special { .. } => "special",
        EntryBody::AcpiHid { .. } => "acpi-hid",
        EntryBody::Reserved => "reserved",
    }
}

fn entry(e: &DeviceEntry<'_>) -> Value {
    let mut v = json!({
        "offset": e.offset, "type": entry_name(e), "type_code": e.kind, "length": e.length,
        "device_id": e.device_id, "device": Bdf::from_id(e.device_id).to_string(), "data": e.data,
    });
    let extra = match e.body {
        EntryBody::AliasSelect { alias } | EntryBody::AliasRangeStart { alias } => {
            json!({ "alias": alias, "alias_device": Bdf::from_id(alias).to_string() })
        }
        EntryBody::ExtendedSelect { ext } | EntryBody::ExtendedRangeStart { ext } => {
            json!({ "ext": ext })
        }
        EntryBody::Special { handle, source, variety } => json!({
            "handle": handle, "source": source, "source_device": Bdf::from_id(source).to_string(),
            "variety": variety,
            "variety_name": match variety { 1 => "ioapic", 2 => "hpet", _ => "reserved" },
        }),
        EntryBody::AcpiHid { hid, cid, uid_format, uid_length, uid } => json!({
            "hid": text(&hid), "cid": hex(u64::from_le_bytes(cid)),
            "uid_format": uid_format, "uid_length": uid_length,
            "uid": match uid {
                AcpiUid::None => Value::Null,
                AcpiUid::String(b) => Value::String(text(b)),
                AcpiUid::Integer(b) => match uid.integer() {
                    Some(n) => hex(n),
                    None => Value::String(format!("{b:02x?}")),
                },
                AcpiUid::Other { bytes, .. } => Value::String(format!("{bytes:02x?}")),
            },
        }),
        _ => json!({}),
    };
    if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    v
}

fn ivhd(index: usize, h: &Ivhd<'_>, in_use: bool) -> Value {
    let unit = IvrsUnit::new(index, h);
    json!({
        "type": "ivhd", "type_code": h.kind, "index": index, "offset": h.offset,
        "length": h.length, "flags": h.flags, "device_id": h.device_id,
        "device": Bdf::from_id(h.device_id).to_string(),
        "capability_offset": h.capability_offset, "base": hex(h.base), "segment": h.segment,
        "info": h.info, "attributes": h.attributes,
        "efr": h.efr.map(hex), "efr2": h.efr2.map(hex), "in_use": in_use,
        "entries": h.entries().map(|e| entry(&e)).collect::<Vec<_>>(),
        "ranges": unit.ranges.iter().map(|r| json!({
            "first": r.first, "last": r.last, "data": r.data, "alias": r.alias, "ext": r.ext,
        })).collect::<Vec<_>>(),
        "problems": unit.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

fn ivmd(m: &Ivmd) -> Value {
    let target = match m.target() {
        IvmdTarget::All => json!({ "kind": "all" }),
        IvmdTarget::Device(d) => json!({ "kind": "device", "first": d, "last": d }),
        IvmdTarget::Range(a, b) => json!({ "kind": "range", "first": a, "last": b }),
    };
    json!({
        "type": "ivmd", "type_code": m.kind, "offset": m.offset, "length": m.length,
        "flags": m.flags, "device_id": m.device_id, "aux": m.aux,
        "start": hex(m.start), "size": hex(m.size), "target": target,
    })
}

fn warnings(table: &Decoded<'_>) -> Value {
    sanity(table)
        .warnings
        .iter()
        .map(|w| {
            let severity = match w.severity() {
                Severity::Bug => "bug",
                Severity::Warn => "warn",
                Severity::Info => "info",
            };
            json!({ "severity": severity, "message": w.to_string() })
        })
        .collect()
}

fn dmar(path: &Path, d: &Dmar<'_>, table: &Decoded<'_>) -> Value {
    json!({
        "file": path.display().to_string(),
        "signature": "DMAR",
        "header": header(d.header(), d.checksum_ok()),
        "host_address_width": d.host_address_width(),
        "address_width_bits": d.address_width_bits(),
        "flags": d.flags(),
        "flag_names": flag_names(d.flags(), &[
            (DMAR_FLAG_INTR_REMAP, "intr-remap"),
            (DMAR_FLAG_X2APIC_OPT_OUT, "x2apic-opt-out"),
            (DMAR_FLAG_DMA_CTRL_OPT_IN, "dma-ctrl-opt-in"),
        ]),
        "structures": d.structures().map(dmar_structure).collect::<Vec<_>>(),
        "summary": dmar_summary(d),
        "warnings": warnings(table),
    })
}

fn ivrs(path: &Path, r: &Ivrs<'_>, table: &Decoded<'_>) -> Value {
    let info = r.ivinfo();
    let preferred = r.preferred_ivhd_type();
    let mut index = 0;
    let blocks: Vec<Value> = r
        .blocks()
        .map(|b| match b {
            IvrsBlock::Hardware(h) => {
                index += 1;
                ivhd(index - 1, &h, Some(h.kind) == preferred)
            }
            IvrsBlock::Memory(m) => ivmd(&m),
            IvrsBlock::Unknown { kind, offset, length } => json!({
                "type": "unknown", "type_code": kind, "offset": offset, "length": length,
            }),
        })
        .collect();
    json!({
        "file": path.display().to_string(),
        "signature": "IVRS",
        "header": header(r.header(), r.checksum_ok()),
        "ivinfo": {
            "raw": info.0, "efr_supported": info.efr_supported(),
            "dma_remap_required": info.dma_remap_required(), "gva_size": info.gva_size(),
            "pa_size": info.pa_size(), "va_size": info.va_size(),
            "ht_ats_reserved": info.ht_ats_reserved(),
        },
        "preferred_ivhd_type": preferred,
        "blocks": blocks,
        "summary": ivrs_summary(r),
        "warnings": warnings(table),
    })
}

/// The JSON object for one decoded table file.
pub fn table(path: &Path, t: &Decoded<'_>) -> Value {
    match t {
        Decoded::Dmar(d) => dmar(path, d, t),
        Decoded::Ivrs(r) => ivrs(path, r, t),
    }
}
