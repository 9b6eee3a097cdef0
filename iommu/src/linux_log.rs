//! Log lines in the shapes Linux prints, so a hypervisor log can be read next to a Linux
//! `dmesg` of the same machine: the prefixes (`DMAR:`, `DMAR-IR:`, `AMD-Vi:`), a unit's
//! registers as `drivers/iommu/intel/dmar.c` announces them, and DMA faults as
//! `dmar_fault_do_one()` and `amd_iommu_print_event()` print them.

use crate::amdvi::Event;
use crate::vtd::FaultRecord;
use alloc::format;
use alloc::string::String;

/// Prefix of VT-d lines (remapping units, DMAR table, DMA faults).
pub const DMAR: &str = "DMAR";
/// Prefix of VT-d interrupt-remapping lines.
pub const DMAR_IR: &str = "DMAR-IR";
/// Prefix of AMD-Vi lines.
pub const AMD_VI: &str = "AMD-Vi";

/// `dmar0: reg_base_addr fed90000 ver 1:0 cap d2008c22260206 ecap f00f4a`, as Linux
/// announces each unit (hex without `0x`, as Linux prints it).
pub fn vtd_unit(index: usize, base: u64, version: u32, cap: u64, ecap: u64) -> String {
    format!(
        "dmar{index}: reg_base_addr {base:x} ver {}:{} cap {cap:x} ecap {ecap:x}",
        (version >> 4) & 0xF,
        version & 0xF
    )
}

/// `[DMA Write NO_PASID] Request device [00:04.0] fault addr 0x1ff000 [fault reason 0x05]
/// <reason>`, Linux's shape of a VT-d fault record; a refused interrupt request (reasons
/// 0x20-0x27) as `[INTR-REMAP] Request device [00:04.0] fault index 0x8 [fault reason
/// 0x26] <reason>`.
pub fn vtd_fault(r: &FaultRecord) -> String {
    if let Some(index) = r.interrupt_index {
        return format!(
            "[INTR-REMAP] Request device [{}] fault index {index:#x} [fault reason {:#04x}] {}",
            r.bdf(),
            r.reason,
            r.reason_text()
        );
    }
    let pasid = match r.pasid {
        Some(p) => format!("PASID {p:#x}"),
        None => String::from("NO_PASID"),
    };
    format!(
        "[DMA {} {pasid}] Request device [{}] fault addr {:#x} [fault reason {:#04x}] {}",
        if r.is_read { "Read" } else { "Write" },
        r.bdf(),
        r.address,
        r.reason,
        r.reason_text()
    )
}

/// `Event logged [IO_PAGE_FAULT device=0000:00:04.0 domain=0x0001 address=0x1ff000
/// flags=0x0030]`, Linux's shape of an AMD-Vi event (segment 0: the event log carries
/// none); events without a Linux shape keep this crate's words inside the brackets.
pub fn amdvi_event(segment: u16, e: &Event) -> String {
    match *e {
        Event::IoPageFault { device, domain, pasid, address, flags } => {
            let b = crate::acpi::pci::Bdf::from_id(device);
            let tag = match (domain, pasid) {
                (Some(d), _) => format!("domain={d:#06x}"),
                (None, Some(p)) => format!("pasid={p:#07x}"),
                (None, None) => String::from("domain=0x0000"),
            };
            format!(
                "Event logged [IO_PAGE_FAULT device={segment:04x}:{b} {tag} address={address:#x} flags={:#06x}]",
                flags.0
            )
        }
        _ => format!("Event logged [{e}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amdvi::EventFlags;

    #[test]
    fn vtd_lines_have_linux_shape() {
        assert_eq!(
            vtd_unit(0, 0xfed9_0000, 0x10, 0xd2_008c_2226_0206, 0xf0_0f4a),
            "dmar0: reg_base_addr fed90000 ver 1:0 cap d2008c22260206 ecap f00f4a"
        );
        let r = FaultRecord {
            index: 0,
            source: 0x0020,
            address: 0x1f_f000,
            reason: 5,
            is_read: false,
            pasid: None,
            interrupt_index: None,
        };
        let line = vtd_fault(&r);
        assert!(
            line.starts_with("[DMA Write NO_PASID] Request device [00:04.0] fault addr 0x1ff000 [fault reason 0x05] "),
            "{line}"
        );
        let r = FaultRecord { is_read: true, pasid: Some(3), ..r };
        assert!(vtd_fault(&r).starts_with("[DMA Read PASID 0x3] Request device [00:04.0]"));
        let r = FaultRecord { reason: 0x26, interrupt_index: Some(8), ..r };
        assert!(
            vtd_fault(&r).starts_with(
                "[INTR-REMAP] Request device [00:04.0] fault index 0x8 [fault reason 0x26] "
            ),
            "{}",
            vtd_fault(&r)
        );
    }

    #[test]
    fn amdvi_lines_have_linux_shape() {
        let e = Event::IoPageFault {
            device: 0x0028,
            domain: Some(2),
            pasid: None,
            address: 0x1f_f000,
            flags: EventFlags(0x0030),
        };
        assert_eq!(
            amdvi_event(0, &e),
            "Event logged [IO_PAGE_FAULT device=0000:00:05.0 domain=0x0002 address=0x1ff000 flags=0x0030]"
        );
    }
}
