//! ACPI discovery with the `acpi` crate: RSDP, RSDT/XSDT, MADT, MCFG; and the raw bytes
//! of DMAR and IVRS for the `iommu` parsers (the `acpi` crate only names them).

use acpi::sdt::{SdtHeader, Signature};
use acpi::{AcpiHandler, AcpiTable, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use boot::{BootInfo, Rsdp};
use core::ptr::NonNull;

/// Maps ACPI tables: RAM and ACPI ranges are identity-mapped at init; anything else a
/// table covers (reserved ranges) is mapped uncached on demand.
#[derive(Clone, Copy, Debug)]
pub struct IdentityHandler;

impl AcpiHandler for IdentityHandler {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        // The whole table, not just its first page: tables may sit in reserved ranges
        // (SeaBIOS) that the kernel does not map at init.
        let mapped = crate::mem::paging::map_unmapped(phys as u64, size as u64);
        // A null or unmappable table pointer is a firmware bug: hand the crate a page of
        // zeros instead, which fails its signature check, rather than dereferencing it.
        let (virt, size) = match (mapped, NonNull::new(phys as *mut T)) {
            (Ok(()), Some(v)) => (v, size),
            (Ok(()), None) => {
                log::warn!("[Firmware Bug] ACPI: a table pointer is 0; ignoring it");
                (NonNull::from(&ZEROS).cast(), size.min(4096))
            }
            (Err(e), _) => {
                log::warn!(
                    "[Firmware Bug] ACPI: cannot map {phys:#x}+{size:#x} ({e}); ignoring it"
                );
                (NonNull::from(&ZEROS).cast(), size.min(4096))
            }
        };
        // SAFETY: either all of [phys, phys + size) is identity-mapped (checked above), so
        // its virtual address is `phys`, or `virt` is the static zero page and `size` at
        // most its length; the `acpi` crate's contract says the range holds a valid T.
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

// SAFETY: as above, for SPCR.
unsafe impl AcpiTable for RawTable<{ u32::from_le_bytes(*b"SPCR") }> {
    const SIGNATURE: Signature = Signature::SPCR;
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
    /// The SPCR table's bytes (the firmware's console UART), when present.
    pub spcr: Option<&'static [u8]>,
    /// Table signatures in RSDT/XSDT order.
    pub signatures: Vec<[u8; 4]>,
    /// The OEM id of the first table ("BOCHS " on QEMU's and Bochs' generated tables).
    pub oem_id: [u8; 6],
}

impl AcpiInfo {
    /// Whether the tables are the ones QEMU (or Bochs) generates: an emulated test machine.
    pub fn emulated(&self) -> bool {
        &self.oem_id == b"BOCHS "
    }
}

fn raw_bytes<T: AcpiTable>(tables: &AcpiTables<IdentityHandler>) -> Option<&'static [u8]> {
    let map = tables.find_table::<T>().ok()?;
    let len = (map.get().header().length as usize).min(map.region_length());
    // SAFETY: `find_table` validated the header (signature and checksum) and mapped the
    // table's full length through our handler, which leaves it mapped for the rest of the
    // run (unmap does nothing); firmware tables are never written, and `len` is capped
    // at the mapped region.
    Some(unsafe { core::slice::from_raw_parts(map.virtual_start().as_ptr() as *const u8, len) })
}

/// Finds the RSDP (boot loader first, BIOS area scan last) and reads the tables.
pub fn discover(info: &'static BootInfo) -> Result<AcpiInfo, TablesError> {
    let tables = match &info.rsdp {
        // SAFETY: the boot loader (PVH start info or Multiboot1 scan) gave this physical
        // address of the RSDP; our handler maps whatever it covers before the crate reads
        // it (or hands over a zero page), and the crate checks signature and checksum.
        Some(Rsdp::Address(a)) => unsafe { AcpiTables::from_rsdp(IdentityHandler, *a as usize) }?,
        Some(Rsdp::Copy(bytes)) => {
            // SAFETY: `bytes` is the loader's RSDP copied into the static BootInfo, which
            // lives in the kernel image (mapped, never freed); its address works as a
            // physical one because the kernel is identity-mapped. Checksummed by the crate.
            unsafe { AcpiTables::from_rsdp(IdentityHandler, bytes.as_ptr() as usize) }?
        }
        None => {
            log::info!("acpi: no RSDP from the boot loader; scanning the BIOS area");
            // SAFETY: the crate reads the EBDA pointer at 0x40E and scans the EBDA and
            // 0xE0000-0xFFFFF, all in the first 2 MiB, which the handler maps on demand
            // like any other range; candidates are checked by signature and checksum.
            unsafe { AcpiTables::search_for_rsdp_bios(IdentityHandler) }?
        }
    };
    log::info!(
        "acpi: revision {} ({})",
        tables.revision(),
        if tables.revision() == 0 { "RSDT" } else { "XSDT" }
    );
    let mut names = alloc::string::String::new();
    let mut signatures = Vec::new();
    let mut oem_id = [0u8; 6];
    for h in tables.headers() {
        // SAFETY: SdtHeader is a packed 36-byte plain-data struct (size checked by
        // transmute); any byte pattern is a valid [u8; 36]. The signature is bytes 0..4.
        let raw: [u8; 36] = unsafe { core::mem::transmute::<SdtHeader, [u8; 36]>(h) };
        let sig = &raw[..4];
        if signatures.is_empty() {
            oem_id.copy_from_slice(&raw[10..16]);
        }
        signatures.push([sig[0], sig[1], sig[2], sig[3]]);
        if sig.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            names.push_str(core::str::from_utf8(sig).unwrap_or("????"));
        } else {
            names.push_str("????");
        }
        names.push(' ');
    }
    log::info!("acpi: tables: {}", names.trim_end());

    let mut out = AcpiInfo {
        ecam: Vec::new(),
        dmar: None,
        ivrs: None,
        cpus: 0,
        ioapics: Vec::new(),
        spcr: None,
        signatures,
        oem_id,
    };
    if let Ok(mcfg) = tables.find_table::<acpi::mcfg::Mcfg>() {
        for e in mcfg.get().entries() {
            let (base, seg, s, end) =
                (e.base_address, e.pci_segment_group, e.bus_number_start, e.bus_number_end);
            log::info!("acpi: MCFG segment {seg} buses {s:#04x}-{end:#04x} ECAM at {base:#x}");
            out.ecam.push((base, seg, s, end));
        }
    } else {
        log::info!("acpi: no MCFG: PCI configuration access through ports 0xCF8/0xCFC");
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
    out.spcr = raw_bytes::<RawTable<{ u32::from_le_bytes(*b"SPCR") }>>(&tables);
    Ok(out)
}

/// Why the ACPI tables could not be read: the `acpi` crate's error, in words.
#[derive(Debug)]
pub struct TablesError(pub acpi::AcpiError);

impl From<acpi::AcpiError> for TablesError {
    fn from(e: acpi::AcpiError) -> Self {
        TablesError(e)
    }
}

impl core::fmt::Display for TablesError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        use acpi::madt::MadtError as M;
        use acpi::AcpiError as E;
        match &self.0 {
            E::NoValidRsdp => f.write_str("no valid RSDP (the root pointer to the tables) found"),
            E::RsdpIncorrectSignature => f.write_str("the RSDP's signature is not \"RSD PTR \""),
            E::RsdpInvalidOemId => f.write_str("the RSDP's OEM id is not text"),
            E::RsdpInvalidChecksum => f.write_str("the RSDP's checksum does not add up"),
            E::SdtInvalidSignature(s) => write!(f, "table {s}: its signature is wrong"),
            E::SdtInvalidOemId(s) => write!(f, "table {s}: its OEM id is not text"),
            E::SdtInvalidTableId(s) => write!(f, "table {s}: its table id is not text"),
            E::SdtInvalidChecksum(s) => write!(f, "table {s}: its checksum does not add up"),
            E::TableMissing(s) => write!(f, "there is no {s} table"),
            E::InvalidFacsAddress => f.write_str("the FADT's FACS address is invalid"),
            E::InvalidDsdtAddress => f.write_str("the FADT's DSDT address is invalid"),
            E::InvalidMadt(m) => f.write_str(match m {
                M::UnexpectedEntry => "the MADT has an entry of an unexpected type",
                M::InterruptOverrideEntryHasInvalidBus => {
                    "an MADT interrupt override names a bus other than ISA"
                }
                M::InvalidLocalNmiLine => "an MADT local NMI entry names an invalid LINT line",
                M::MpsIntiInvalidPolarity => "an MADT entry has an invalid interrupt polarity",
                M::MpsIntiInvalidTriggerMode => {
                    "an MADT entry has an invalid interrupt trigger mode"
                }
                M::WakeupApsTimeout => "waking the application processors timed out",
            }),
            E::InvalidGenericAddress => f.write_str("a generic address structure is invalid"),
            E::AllocError => f.write_str("out of memory while reading the tables"),
        }
    }
}
