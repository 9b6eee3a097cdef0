//! The guest platform (`platform pc`: 8259 pair, 8254, xAPIC local APIC), under QEMU TCG
//! with `-cpu max` (SVM with nested paging; no x2APIC and no AVIC, so the guest's APIC
//! is the trapped MMIO page; the in-kernel tests refuse to judge without the host's PIT,
//! which measures the TSC rate the guest timers run on): each device as a state machine,
//! the MMIO decoder, and the guest program taking PIT and APIC timer interrupts, with
//! the controls (timers masked, no platform, an undecodable access). Then a
//! configuration giving one edu partition the platform: its device's MSI arrives through
//! the emulated local APIC, and the story holds.

use std::path::PathBuf;
use tests::*;

const PLATFORM_TESTS: &str = "platform_pic,platform_pit,platform_lapic,platform_devices,\
platform_decoder,platform_walk,platform_guest_timers,platform_guest_spinning,platform_guest_masked,\
platform_guest_hostile,platform_guest_absent,platform_guest_undecodable";

#[test]
fn platform_devices_and_guest_timers() {
    let out = boot(&machine(Iommu::None, PLATFORM_TESTS));
    assert_passed(&out);
    // The guest's own counts, judged in the kernel against its elapsed TSC.
    assert_logged(&out, "platform: guest took ");
    assert_logged(&out, "platform: masked timers: ");
    assert_logged(&out, "partition bare: UnhandledIo { port: 32");
    assert_logged(
        &out,
        "partition undecodable: stopped: its access to 0xfee00080 (local APIC) at ",
    );
    assert_logged(&out, "was refused: opcode 0xff is not an emulated MMIO access (mov or xchg)");
}

#[test]
fn configured_platform_delivers_device_msi_through_the_local_apic() {
    let path: PathBuf =
        std::env::temp_dir().join(format!("partitions-{}-platform.cfg", std::process::id()));
    std::fs::write(
        &path,
        "partition alpha\n  memory 64M\n  backing 2m\n  device 00:04.0\n  platform pc\n\
         partition beta\n  memory 32M\n  device 00:05.0\n",
    )
    .expect("write the configuration");
    let mut m = Machine::new(&kernel(), Iommu::Intel { aw_bits: None, caching_mode: false });
    m.edu = vec![Edu { slot: 4 }, Edu { slot: 5 }];
    m.extra = vec!["-initrd".into(), path.display().to_string()];
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Success, "{}", out.log);
    for p in ["alpha", "beta"] {
        assert_logged(&out, &format!("partition {p}: guest reports irq_count = 0x3"));
    }
    // Its 3 completion interrupts went through the emulated local APIC (and were EOI'd
    // there, or the next could not have come); beta, without the platform, took its own
    // 3 as plain virtual interrupts.
    assert_logged(
        &out,
        "partition alpha: guest platform: 0 PIC and 3 local APIC vectors taken, 3 APIC EOIs",
    );
    assert_logged(&out, "PC platform (PIC, PIT, local APIC)");
    assert_logged(&out, "partitions: the device-assignment story held");
}
