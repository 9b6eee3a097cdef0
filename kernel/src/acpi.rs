//! ACPI discovery with the `acpi` crate: RSDP, RSDT/XSDT, MADT, MCFG; and the raw bytes
//! of DMAR and IVRS for the `iommu` parsers (the `acpi` crate only names them).

use acpi::sdt::{SdtHeader, Signature};
use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use boot::{BootInfo, Rsdp};
use core::ptr::NonNull;

/// Maps ACPI tables: physical memory is identity-mapped; ranges outside the boot
/// memory map are mapped (uncached) on demand.
#[derive(Clone, Copy, Debug)]
pub struct IdentityHandler;

impl AcpiHandler for IdentityHandler {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        if !crate::mem::paging::is_mapped(phys as u64) {
            let _ = crate::mem::paging::map_mmio(phys as u64, size as u64);
        }
        // A null table pointer is a firmware bug: hand the crate a page of zeros instead,
        // which fails its signature check, rather than dereferencing null.
        let (virt, size) = match NonNull::new(phys as *mut T) {
            Some(v) => (v, size),
            None => {
                log::warn!("[Firmware Bug] ACPI: a table pointer is 0; ignoring it");
                (NonNull::from(&ZEROS).cast(), size.min(4096))
            }
        };
        // SAFETY: the range is identity-mapped (above), so its virtual address is `phys`
        // (or the zero page); the `acpi` crate's contract says it holds a valid T.
        unsafe { PhysicalMapping::new(phys, virt, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

static ZEROS: [u8; 4096] = [0; 4096];

/// A table we only want the bytes of.
#[repr(C, packed)]
struct RawTable<const SIG: u32> {
    header: SdtHeader,
}

// SAFETY: RawTable is exactly an SDT header; the signature constant names the table.
unsafe impl AcpiTable for RawTable<{ u32::from_le_bytes(*b"DMAR") }> {
    const SIGNATURE: Signature = Signature::DMAR;
    fn header(&self) -> &SdtHeader {
        &self.header
    }
}

// SAFETY: as above, for IVRS.
unsafe impl AcpiTable for RawTable<{ u32::from_le_bytes(*b"IVRS") }> {
    const SIGNATURE: Signature = Signature::IVRS;
    fn header(&self) -> &SdtHeader {
        &self.header
    }
}

/// What the hypervisor learned from ACPI.
pub struct AcpiInfo {
    /// ECAM windows: (base, segment, first bus, last bus).
    pub ecam: Vec<(u64, u16, u8, u8)>,
    /// The DMAR table's bytes, when present.
    pub dmar: Option<&'static [u8]>,
    /// The IVRS table's bytes, when present.
    pub ivrs: Option<&'static [u8]>,
    /// Local APICs (processors) listed in the MADT.
    pub cpus: usize,
    /// IOAPICs: (id, MMIO base).
    pub ioapics: Vec<(u8, u32)>,
}

fn raw_bytes<T: AcpiTable>(tables: &AcpiTables<IdentityHandler>) -> Option<&'static [u8]> {
    let map = tables.find_table::<T>().ok()?;
    let len = map.get().header().length as usize;
    // SAFETY: the table is identity-mapped firmware memory that nothing writes; its
    // header was validated by `find_table` (signature and checksum) and says its length.
    Some(unsafe { core::slice::from_raw_parts(map.physical_start() as *const u8, len) })
}

/// Finds the RSDP (boot loader first, BIOS area scan last) and reads the tables.
pub fn discover(info: &'static BootInfo) -> Result<AcpiInfo, acpi::AcpiError> {
    // SAFETY (all three): the addresses come from the boot loader or the BIOS area scan
    // and are identity-mapped; the `acpi` crate validates signature and checksum.
    let tables = match &info.rsdp {
        Some(Rsdp::Address(a)) => unsafe { AcpiTables::from_rsdp(IdentityHandler, *a as usize) }?,
        Some(Rsdp::Copy(bytes)) => {
            unsafe { AcpiTables::from_rsdp(IdentityHandler, bytes.as_ptr() as usize) }?
        }
        None => {
            log::info!("acpi: no RSDP from the boot loader; scanning the BIOS area");
            unsafe { AcpiTables::search_for_rsdp_bios(IdentityHandler) }?
        }
    };
    log::info!(
        "acpi: revision {} ({})",
        tables.revision(),
        if tables.revision() == 0 { "RSDT" } else { "XSDT" }
    );
    let mut names = alloc::string::String::new();
    for h in tables.headers() {
        // SAFETY: SdtHeader is a packed 36-byte plain-data struct (size checked by
        // transmute); any byte pattern is a valid [u8; 36]. The signature is bytes 0..4.
        let raw: [u8; 36] = unsafe { core::mem::transmute::<SdtHeader, [u8; 36]>(h) };
        let sig = &raw[..4];
        if sig.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            names.push_str(core::str::from_utf8(sig).unwrap_or("????"));
        } else {
            names.push_str("????");
        }
        names.push(' ');
    }
    log::info!("acpi: tables: {}", names.trim_end());

    let mut out =
        AcpiInfo { ecam: Vec::new(), dmar: None, ivrs: None, cpus: 0, ioapics: Vec::new() };
    if let Ok(mcfg) = tables.find_table::<acpi::mcfg::Mcfg>() {
        for e in mcfg.get().entries() {
            let (base, seg, s, end) =
                (e.base_address, e.pci_segment_group, e.bus_number_start, e.bus_number_end);
            log::info!("acpi: MCFG segment {seg} buses {s:#04x}-{end:#04x} ECAM at {base:#x}");
            out.ecam.push((base, seg, s, end));
        }
    } else {
        log::warn!("acpi: no MCFG: PCI enumeration through ECAM is not possible");
    }
    if let Ok(madt) = tables.find_table::<acpi::madt::Madt>() {
        for e in madt.get().entries() {
            match e {
                acpi::madt::MadtEntry::LocalApic(_) | acpi::madt::MadtEntry::LocalX2Apic(_) => {
                    out.cpus += 1
                }
                acpi::madt::MadtEntry::IoApic(io) => {
                    out.ioapics.push((io.io_apic_id, io.io_apic_address))
                }
                _ => {}
            }
        }
        log::info!("acpi: MADT: {} processors, {} IOAPICs", out.cpus, out.ioapics.len());
    }
    out.dmar = raw_bytes::<RawTable<{ u32::from_le_bytes(*b"DMAR") }>>(&tables);
    out.ivrs = raw_bytes::<RawTable<{ u32::from_le_bytes(*b"IVRS") }>>(&tables);
    Ok(out)
}
