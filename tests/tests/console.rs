//! The console UART: COM1 at 115200 by default, the UART an ACPI SPCR table names when
//! there is one, and `console=` over both.
//!
//! Machine: q35 with two 16550s (`-serial stdio` is COM1 at 0x3f8, a second `-serial
//! file:` is COM2 at 0x2f8); the SPCR table is added with QEMU's `-acpitable file=`,
//! which QEMU lists in the RSDT/XSDT as given. QEMU generates no SPCR of its own on x86
//! (checked: the control run logs "no SPCR table").

use std::path::PathBuf;
use tests::*;

/// A revision-2 SPCR naming a 16550 in I/O space at `port` at 115200 baud (field 7).
fn spcr_for_port(port: u16) -> Vec<u8> {
    let mut t = vec![0u8; 80];
    t[..4].copy_from_slice(b"SPCR");
    t[4..8].copy_from_slice(&80u32.to_le_bytes());
    t[8] = 2;
    t[10..16].copy_from_slice(b"TESTID");
    t[16..24].copy_from_slice(b"SPCRTEST");
    t[36] = 0; // full 16550
    t[40] = 1; // GAS: system I/O
    t[41] = 8;
    t[43] = 1;
    t[44..52].copy_from_slice(&(port as u64).to_le_bytes());
    t[58] = 7; // 115200
    let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-test");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// Boots with COM2 written to a file; returns (outcome with COM1 in its log, COM2's text).
fn boot_with_com2(name: &str, cmdline: &str, spcr: Option<Vec<u8>>) -> (Outcome, String) {
    let com2 = scratch(&format!("{name}.com2.log"));
    let _ = std::fs::remove_file(&com2);
    let mut m = machine(Iommu::None, "boot_info");
    m.cmdline = format!("test=boot_info {cmdline}");
    m.extra = vec!["-serial".into(), format!("file:{}", com2.display())];
    if let Some(t) = spcr {
        let f = scratch(&format!("{name}.spcr.bin"));
        std::fs::write(&f, t).expect("SPCR file");
        m.extra.extend(["-acpitable".into(), format!("file={}", f.display())]);
    }
    let out = boot(&m);
    let text = std::fs::read_to_string(&com2).unwrap_or_default();
    (out, text)
}

#[test]
fn default_is_com1_at_115200_without_spcr() {
    let (out, com2) = boot_with_com2("default", "", None);
    assert_passed(&out);
    assert_logged(&out, "console: COM1 (port 0x3f8) at 115200 baud (default, no SPCR table)");
    assert!(com2.is_empty(), "COM2 got output: {com2}");
}

#[test]
fn spcr_names_com2_and_everything_goes_there() {
    let (out, com2) = boot_with_com2("spcr", "", Some(spcr_for_port(0x2F8)));
    assert_eq!(out.verdict, Verdict::Success, "{}\n--- COM2 ---\n{com2}", out.log);
    assert!(out.log.contains(" SPCR") || com2.contains(" SPCR"), "no SPCR listed: {com2}");
    // The whole boot, banner first, is on COM2; COM1 has none of it.
    assert!(com2.contains("== micro-hypervisor"), "{com2}");
    assert!(
        com2.contains("console: COM2 (port 0x2f8) at 115200 baud (from the ACPI SPCR table)"),
        "{com2}"
    );
    assert!(com2.contains(" 0 failed"), "{com2}");
    assert!(!out.log.contains("micro-hypervisor"), "COM1 got output: {}", out.log);
}

#[test]
fn console_switch_overrides_spcr() {
    let (out, com2) = boot_with_com2("switch", "console=com1", Some(spcr_for_port(0x2F8)));
    assert_passed(&out);
    assert_logged(&out, "console: COM1 (port 0x3f8) at 115200 baud (console=)");
    assert!(com2.is_empty(), "COM2 got output: {com2}");
    let (out, com2) = boot_with_com2("switch2", "console=0x2f8", None);
    assert_eq!(out.verdict, Verdict::Success, "{}\n--- COM2 ---\n{com2}", out.log);
    assert!(com2.contains("console: COM2 (port 0x2f8) at 115200 baud (console=)"), "{com2}");
    assert!(!out.log.contains("micro-hypervisor"), "COM1 got output: {}", out.log);
}

#[test]
fn a_bad_console_value_is_refused_on_com1() {
    let (out, _) = boot_with_com2("bad", "console=ttyS9", None);
    assert_eq!(out.verdict, Verdict::Failure, "{}", out.log);
    assert_logged(&out, "command-line switch `console` does not take `ttyS9`");
}

/// A PCI serial card (QEMU `pci-serial`, 1b36:0002, a 16550 behind an I/O BAR the
/// firmware places) as the console through `console=io:PORT`: the whole boot goes to its
/// chardev, and the report says the card cannot be assigned because it is the console.
/// The first boot (report on COM1) finds where SeaBIOS put the BAR.
#[test]
fn pci_serial_card_as_console_is_never_assignable() {
    let card = scratch("pci-serial.log");
    let mut m = machine(Iommu::Intel { aw_bits: None, caching_mode: false }, "boot_info");
    m.cmdline = "mode=report".into();
    m.extra = vec![
        "-chardev".into(),
        format!("file,id=ps,path={}", card.display()),
        "-device".into(),
        "pci-serial,chardev=ps,addr=0x7".into(),
    ];
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    let mut lines = out.log.lines().skip_while(|l| !l.contains("pci: 0000:00:07.0 1b36:0002"));
    let bar = lines.nth(1).unwrap_or_default();
    let port = bar
        .split_once("BAR0 io ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no I/O BAR0 for the card in\n{}", out.log))
        .to_string();
    assert_logged(&out, "assign: 0000:00:07.0 1b36:0002 serial controller [070002]");
    assert_logged(&out, "no memory BAR to pass through");
    let _ = std::fs::remove_file(&card);
    m.cmdline = format!("mode=report console=io:{port}");
    let out = boot(&m);
    let text = std::fs::read_to_string(&card).unwrap_or_default();
    assert_eq!(out.verdict, Verdict::Success, "{}\n--- card ---\n{text}", out.log);
    assert!(!out.log.contains("micro-hypervisor"), "COM1 got output: {}", out.log);
    assert!(text.contains(&format!("console: port {port} at 115200 baud (console=)")), "{text}");
    let verdict = text
        .lines()
        .find(|l| l.starts_with("assign: 0000:00:07.0 1b36:0002 serial controller"))
        .unwrap_or_else(|| panic!("no verdict for the card in\n{text}"));
    assert!(verdict.ends_with("not assignable: it is the hypervisor's console"), "{verdict}");
}
