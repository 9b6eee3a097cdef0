//! Bounded, deterministic mutation of the corpus: bit flips, truncation and length fields
//! set to 0 / 1 / odd / huge. Nothing may panic, and every error must point inside the data.

mod common;

use iommu::acpi::dmar::DmarStructure;
use iommu::acpi::header::Checksum;
use iommu::acpi::ivrs::IvrsBlock;
use iommu::acpi::ivrs_entry::EntryBody;
use iommu::acpi::pci::{Bdf, BridgeKind, MemRange, PciBridge};
use iommu::acpi::resolve::{DmarUnits, IvrsUnits};
use iommu::acpi::sanity::{check_dmar, check_ivrs, PlatformFacts};
use iommu::acpi::summary::{dmar_summary, ivrs_summary};
use iommu::acpi::{AcpiError, Dmar, Ivrs};

/// xorshift64*: a fixed-seed generator so every run mutates the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fix_checksum(t: &mut [u8]) {
    if t.len() >= 10 {
        t[9] = 0;
        let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
        t[9] = 0u8.wrapping_sub(sum);
    }
}

#[derive(Default)]
struct Tally {
    inputs: usize,
    accepted: usize,
    rejected: usize,
}

fn check_error(e: &AcpiError, data: &[u8]) {
    // At most one field (an ACPI HID entry's fixed part is the longest) past the data.
    assert!(
        e.offset < data.len() + 24,
        "error offset {:#x} far outside {} bytes: {e}",
        e.offset,
        data.len()
    );
    assert!(!e.to_string().is_empty());
}

fn exercise_dmar(data: &[u8], tally: &mut Tally) {
    tally.inputs += 1;
    if let Err(e) = Dmar::parse(data) {
        check_error(&e, data);
    }
    match Dmar::parse_with(data, Checksum::Tolerate) {
        Err(e) => {
            tally.rejected += 1;
            check_error(&e, data);
        }
        Ok(d) => {
            tally.accepted += 1;
            for s in d.structures() {
                if let DmarStructure::Unknown { offset, .. } = s {
                    assert!(offset < d.bytes().len());
                }
                for sc in s.scopes().into_iter().flatten() {
                    assert!(sc.offset + usize::from(sc.length) <= d.bytes().len());
                }
            }
            let topo = vec![PciBridge {
                segment: 0,
                bdf: Bdf::from_id(0x00e0),
                secondary: 1,
                subordinate: 4,
                kind: BridgeKind::PcieToPci,
            }];
            let mut units = DmarUnits::new(&d, &topo);
            let reserved = [MemRange { start: 0, end: 0xffff_ffff }];
            let facts = PlatformFacts { reserved: Some(&reserved), ioapic_ids: Some(&[0, 2]) };
            let report = check_dmar(&d, &mut units, &facts);
            report.warnings.iter().for_each(|w| drop(w.to_string()));
            let _ = units.translating_unit(&topo, 0, Bdf::from_id(0x0100));
            let _ = dmar_summary(&d);
        }
    }
}

fn exercise_ivrs(data: &[u8], tally: &mut Tally) {
    tally.inputs += 1;
    if let Err(e) = Ivrs::parse(data) {
        check_error(&e, data);
    }
    match Ivrs::parse_with(data, Checksum::Tolerate) {
        Err(e) => {
            tally.rejected += 1;
            check_error(&e, data);
        }
        Ok(r) => {
            tally.accepted += 1;
            for h in r.ivhds() {
                for e in h.entries() {
                    assert!(e.offset + e.length <= r.bytes().len());
                }
            }
            let mut units = IvrsUnits::new(&r);
            let facts = PlatformFacts { reserved: None, ioapic_ids: Some(&[0x21]) };
            let report = check_ivrs(&r, &mut units, &facts);
            report.warnings.iter().for_each(|w| drop(w.to_string()));
            let _ = units.translating_unit(0, 0xff10);
            let _ = ivrs_summary(&r);
        }
    }
}

/// Offsets of every length field (with its width in bytes) of a valid table.
fn dmar_length_fields(d: &Dmar<'_>) -> Vec<(usize, usize)> {
    let mut out = vec![(4, 4)];
    for s in d.structures() {
        let offset = match &s {
            DmarStructure::Drhd(x) => x.offset,
            DmarStructure::Rmrr(x) => x.offset,
            DmarStructure::Atsr(x) => x.offset,
            DmarStructure::Rhsa(x) => x.offset,
            DmarStructure::Andd(x) => x.offset,
            DmarStructure::Satc(x) => x.offset,
            DmarStructure::Sidp(x) => x.offset,
            DmarStructure::Unknown { offset, .. } => *offset,
        };
        out.push((offset + 2, 2));
        out.extend(s.scopes().into_iter().flatten().map(|sc| (sc.offset + 1, 1)));
    }
    out
}

fn ivrs_length_fields(r: &Ivrs<'_>) -> Vec<(usize, usize)> {
    let mut out = vec![(4, 4)];
    for b in r.blocks() {
        match b {
            IvrsBlock::Hardware(h) => {
                out.push((h.offset + 2, 2));
                for e in h.entries() {
                    if let EntryBody::AcpiHid { .. } = e.body {
                        out.push((e.offset + 21, 1));
                    }
                    // Turning an entry's type into a variable-length or 8-byte one.
                    out.push((e.offset, 1));
                }
            }
            IvrsBlock::Memory(m) => out.push((m.offset + 2, 2)),
            IvrsBlock::Unknown { offset, .. } => out.push((offset + 2, 2)),
        }
    }
    out
}

fn set(t: &mut [u8], at: usize, width: usize, value: u64) {
    for i in 0..width {
        if let Some(b) = t.get_mut(at + i) {
            *b = (value >> (8 * i)) as u8;
        }
    }
}

fn mutate(table: &[u8], fields: &[(usize, usize)], rng: &mut Rng, run: &mut dyn FnMut(&[u8])) {
    let len = table.len();
    // Bit flips, with and without a repaired checksum.
    for _ in 0..128 {
        let mut t = table.to_vec();
        let bit = rng.below(len * 8);
        t[bit / 8] ^= 1 << (bit % 8);
        run(&t);
        fix_checksum(&mut t);
        run(&t);
    }
    // Truncation: the data cut short, and the header length shrunk to match.
    for _ in 0..16 {
        let cut = rng.below(len);
        run(&table[..cut]);
        let mut t = table[..cut].to_vec();
        set(&mut t, 4, 4, cut as u64);
        fix_checksum(&mut t);
        run(&t);
    }
    // Every length field set to 0, 1, odd, one short, one long and huge.
    for &(at, width) in fields {
        let current = (0..width).fold(0u64, |v, i| v | (u64::from(table[at + i]) << (8 * i)));
        let huge = if width == 4 { u64::from(u32::MAX) } else { (1u64 << (8 * width)) - 1 };
        for value in [0, 1, current | 1, current.wrapping_sub(1), current + 2, huge, huge / 2] {
            let mut t = table.to_vec();
            set(&mut t, at, width, value);
            fix_checksum(&mut t);
            run(&t);
        }
    }
}

#[test]
fn mutated_dmar_tables_never_panic() {
    let mut rng = Rng(0x0dda_7a5e_ed00_0001);
    let mut tally = Tally::default();
    for (_, table) in common::corpus("dmar") {
        let d = Dmar::parse(&table).expect("corpus table parses");
        let fields = dmar_length_fields(&d);
        mutate(&table, &fields, &mut rng, &mut |t| exercise_dmar(t, &mut tally));
    }
    println!(
        "DMAR mutations: {} inputs, {} accepted, {} rejected",
        tally.inputs, tally.accepted, tally.rejected
    );
    assert!(tally.inputs > 75_000);
    assert!(tally.accepted > 1000 && tally.rejected > 1000, "mutations both pass and fail parsing");
}

#[test]
fn mutated_ivrs_tables_never_panic() {
    let mut rng = Rng(0x1a7e_5eed_0000_0002);
    let mut tally = Tally::default();
    for (_, table) in common::corpus("ivrs") {
        let r = Ivrs::parse(&table).expect("corpus table parses");
        let fields = ivrs_length_fields(&r);
        mutate(&table, &fields, &mut rng, &mut |t| exercise_ivrs(t, &mut tally));
    }
    println!(
        "IVRS mutations: {} inputs, {} accepted, {} rejected",
        tally.inputs, tally.accepted, tally.rejected
    );
    assert!(tally.inputs > 75_000);
    assert!(tally.accepted > 1000 && tally.rejected > 1000, "mutations both pass and fail parsing");
}
