//! An unmodified Debian 12 Linux kernel in a partition (QEMU TCG, `-cpu max`: SVM with
//! nested paging, which the kernel checks itself before any partition starts). The
//! kernel, busybox and the initramfs built from them come from
//! `xtask::linux_guest::ensure` (Debian's packages, cached; never committed). The
//! partition is given QEMU's NVMe controller at 00:06.0 (`-device nvme` with a disk
//! image holding a known pattern), attached through the IOMMU.
//!
//! What the guest does: the bzImage's decompressor runs, the kernel prints "Linux
//! version" and the memory map the hypervisor built, calibrates on the guest platform's
//! PIT, probes PCI through the virtual configuration space (the controller at 00:01.0
//! with an emulated MSI-X capability) and runs `/init`, whose nvme driver takes the
//! controller with MSI-X interrupts (its table trapped and emulated, each entry remapped
//! by the IOMMU to a host vector of its own and injected through the guest's local APIC);
//! `/init` reads the disk's pattern, writes sector 2 and reboots, a triple fault with
//! `reboot=t`: [`judge_init_and_nvme`]. The host then reads the disk image
//! ([`judge_disk`]). Isolation while Linux runs ([`judge_dma_probe`]): `/init` then takes
//! the controller from its driver and has it DMA inside its partition (lands, the
//! control) and outside (refused: the controller's Data Transfer Error, and VT-d's fault
//! record), while an edu partition beside it passes its own checks. The controls: without a local APIC (`nolapic`) Linux has no MSI
//! domain, the driver gives the controller up and the image is left as it was; a disk
//! whose pattern is wrong fails `/init`'s check and is not written.
//!
//! Machine properties relied on and checked from inside: the controller is 1b36:0010 at
//! 00:06.0 with an MSI-X table of [`NVME_MSIX`] entries in BAR0 (`msix_qsize`, logged by
//! the hypervisor when it takes the table over).

use std::path::PathBuf;
use tests::*;
use xtask::linux_guest::{ensure, marker, LinuxGuest};

/// Where QEMU's NVMe controller sits (the hostile suite's slot).
const NVME_SLOT: u8 = 6;
/// The NVMe controller's MSI-X table size (`msix_qsize`, QEMU's default is 65): the
/// hypervisor logs the size it found, and the test checks it.
const NVME_MSIX: u16 = 4;

fn file_name(p: &std::path::Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A file unique to this test (process and thread: the tests run in parallel).
fn temp(name: &str) -> PathBuf {
    let test = std::thread::current().name().unwrap_or("main").replace("::", "-");
    std::env::temp_dir().join(format!("linux-{}-{test}-{name}", std::process::id()))
}

/// The harness's machine with `config` and `modules` as boot modules and the NVMe
/// controller at [`NVME_SLOT`] backed by a copy of the guest's disk image.
fn linux_machine(iommu: Iommu, g: &LinuxGuest, config: &str, modules: &[PathBuf]) -> Machine {
    let cfg = temp("partitions.cfg");
    std::fs::write(&cfg, config).expect("write the configuration");
    let disk = temp("disk.img");
    std::fs::copy(&g.disk, &disk).expect("copy the disk image");
    linux_machine_on(iommu, &disk, cfg, modules)
}

/// As [`linux_machine`] with the disk image `disk` as it is.
fn linux_machine_on(
    iommu: Iommu,
    disk: &std::path::Path,
    cfg: PathBuf,
    modules: &[PathBuf],
) -> Machine {
    let mut m = Machine::new(&kernel(), iommu);
    let list: Vec<String> =
        std::iter::once(&cfg).chain(modules).map(|p| p.display().to_string()).collect();
    m.extra = vec![
        "-initrd".into(),
        list.join(","),
        "-drive".into(),
        format!("file={},if=none,id=lnvme,format=raw", disk.display()),
        "-device".into(),
        format!("nvme,drive=lnvme,serial=linux0,addr={NVME_SLOT:#x},msix_qsize={NVME_MSIX}"),
    ];
    // The kernel's own bound on the guest (`linux::BUDGET`) ends the run first.
    m.timeout = std::time::Duration::from_secs(600);
    m
}

fn config(g: &LinuxGuest, kernel: &str, memory: &str) -> String {
    format!(
        "partition linux\n  memory {memory}\n  backing 2m\n  image linux:{kernel}\n  initrd {}\n  device 00:{NVME_SLOT:02x}.0\n",
        file_name(&g.initrd)
    )
}

/// The default command line with `nolapic`: Linux then never reads its local APIC and
/// runs on (PIC mode), through PCI enumeration to `/init`.
fn nolapic_cmdline() -> String {
    format!("{DEFAULT_CMDLINE} nolapic")
}

/// The guest's console lines as the host shows them: `partition linux: guest says: "…"`.
fn guest_line(text: &str) -> String {
    format!("partition linux{GUEST_TEXT}{text}")
}

fn judge_boot(out: &Outcome, g: &LinuxGuest) {
    assert_eq!(out.verdict, Verdict::Success, "{}\n{}", out.describe(), out.log);
    // The machine: SVM with nested paging, and the NVMe controller where the test put it.
    assert_logged(out, "svm: enabled (nested paging");
    assert_logged(out, &format!("pci: 0000:00:{NVME_SLOT:02x}.0 1b36:0010 class 010802"));
    // A non-edu device for a Linux partition, through the IOMMU.
    assert_logged(
        out,
        &format!("partition linux: 0000:00:{NVME_SLOT:02x}.0 attached to IOMMU domain"),
    );
    assert_logged(out, "linux: boot protocol 2.15, kernel 0x1000000-");
    // Linux's own lines, under the partition's name, escaped as guest text.
    for text in [
        "[    0.000000] Linux version 6.1.0-".to_string(),
        format!("[    0.000000] Linux version {} (debian-kernel@lists.debian.org)", g.release),
        // The e820 map the hypervisor built, as Linux read it from the zero page.
        "[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009ffff] usable".into(),
        "[    0.000000] BIOS-e820: [mem 0x00000000000a0000-0x00000000000fffff] reserved".into(),
        "[    0.000000] BIOS-e820: [mem 0x0000000000100000-0x0000000007ffffff] usable".into(),
    ] {
        assert!(
            out.log.contains(&guest_line(&text)),
            "expected {text:?} from the guest\n{}",
            out.log
        );
    }
    // The initramfs where the loader put it (page-aligned below the top of 128 MiB).
    assert!(
        out.log
            .lines()
            .any(|l| l.contains(&guest_line("[")) && l.contains("] RAMDISK: [mem 0x07d")),
        "{}",
        out.log
    );
    // The command line the hypervisor completed with its TSC rate.
    let cmdline =
        out.log.lines().find(|l| l.contains(&guest_line("[    0.000000] Command line: ")));
    assert!(cmdline.is_some_and(|l| l.contains(" tsc_early_khz=")), "{cmdline:?}");
    // No guest text outside its quotes: every "Linux version" is the guest's.
    for l in out.log.lines().filter(|l| l.contains("Linux version")) {
        assert!(l.contains(GUEST_TEXT), "guest text outside a guest line: {l}");
    }
    assert!(!host_text(&out.log).contains("Linux version"));
    // The guest platform's PIC, PIT and local APIC carry it through to `/init`, whose
    // output (the tty layer's, driven by the UART's interrupt on IRQ 4) arrives; the nvme
    // driver takes the controller with MSI-X, `/init` reads and writes the disk and
    // reboots, and `reboot=t` makes that a triple fault: a clean shutdown. Both boots.
    judge_init_and_nvme(out);
    // The controller's MSI-X table as the hypervisor found it (the machine property).
    let found = format!(
        "partition linux: 0000:00:{NVME_SLOT:02x}.0: MSI-X table size {NVME_MSIX} found, {NVME_MSIX} entries shown to the guest"
    );
    assert_eq!(out.log.lines().filter(|l| l.contains(&found)).count(), 2, "{}", out.log);
    // Its interrupts arrived at the host vectors and were all injected, in both boots.
    let delivered: Vec<(u64, u64)> = out
        .log
        .lines()
        .filter_map(|l| l.split("partition linux: 00:01.0 MSI-X: ").nth(1))
        .map(|rest| {
            let n: Vec<u64> =
                rest.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
            (n[0], n[1])
        })
        .collect();
    assert_eq!(delivered.len(), 2, "{}", out.log);
    for (taken, injected) in delivered {
        assert!(taken > 0 && injected == taken, "MSI-X: {taken} taken, {injected} injected");
    }
    // Destroyed with its device quiesced and reset like any other, re-created in the same
    // (scrubbed) memory with the device attached again, and booted again to the same end.
    assert_logged(out, "partition linux: destroyed (to be re-created):");
    assert_logged(
        out,
        "partition linux: re-created in the same memory, 1 device(s) attached again",
    );
    assert_logged(out, "partition linux: the re-created guest ended as the first");
    let runs = out.log.lines().filter(|l| l.contains("partition linux: Linux ran ")).count();
    let versions = out
        .log
        .lines()
        .filter(|l| l.contains(&guest_line("[    0.000000] Linux version ")))
        .count();
    assert_eq!((runs, versions), (2, 2), "two boots expected");
    let resets =
        format!("partition linux: 0000:00:{NVME_SLOT:02x}.0 reset by function-level reset (PCIe)");
    assert_eq!(out.log.lines().filter(|l| l.contains(&resets)).count(), 2, "{}", out.log);
    assert_logged(out, "partition linux: destroyed:");
}

/// VT-d, with an edu partition beside the Linux one, and the DMA probe: Linux's `/init`
/// takes the controller from its driver and aims its DMA inside and outside its partition.
#[test]
fn debian_linux_boots_in_a_partition_through_vtd() {
    let g = ensure().unwrap_or_else(|e| panic!("the Linux guest: {e}"));
    let out = boot(&linux_beside_edu(Iommu::Intel { aw_bits: None, caching_mode: false }, &g));
    judge_boot(&out, &g);
    judge_disk(&g, Written::Yes);
    judge_edu_beside(&out);
    judge_dma_probe(&out);
    // VT-d records each refused write, with the controller's requester id and the
    // address the guest aimed at, once per boot (the records are serviced while Linux
    // runs: a record left pending would swallow the second boot's fault).
    let fault = format!(
        "DMAR: [DMA Write NO_PASID] Request device [00:{NVME_SLOT:02x}.0] fault addr {PROBE_OUTSIDE:#x}"
    );
    assert_eq!(out.log.lines().filter(|l| l.contains(&fault)).count(), 2, "{fault}\n{}", out.log);
}

/// AMD-Vi, with an edu partition beside the Linux one: its guest passes its own checks
/// (DMA and its completion interrupts at its own vector) after Linux ran and was
/// destroyed and re-created; and the DMA probe, of which QEMU's AMD-Vi shows only the
/// inside half: it writes no event for the refused write and the controller reports
/// success (the `nvme` suite proves AMD-Vi's refusal of this controller's DMA by a canary).
#[test]
fn debian_linux_boots_in_a_partition_through_amdvi() {
    let g = ensure().unwrap_or_else(|e| panic!("the Linux guest: {e}"));
    let out = boot(&linux_beside_edu(Iommu::Amd { intremap: true }, &g));
    judge_boot(&out, &g);
    judge_disk(&g, Written::Yes);
    judge_edu_beside(&out);
    judge_dma_probe(&out);
}

/// The machine of the two boot tests: the Linux partition with the probe's command line,
/// and an edu partition beside it.
fn linux_beside_edu(iommu: Iommu, g: &LinuxGuest) -> Machine {
    let cfg = format!(
        "{}  cmdline \"{}\"\npartition edu\n  memory 8M\n  device 00:{EDU_SLOT:02x}.0\n",
        config(g, &file_name(&g.kernel), "128M"),
        probe_cmdline()
    );
    let mut m = linux_machine(iommu, g, &cfg, &[g.kernel.clone(), g.initrd.clone()]);
    m.edu = vec![Edu { slot: EDU_SLOT }];
    m
}

/// The edu partition beside Linux passed its own checks (DMA and its three completion
/// interrupts at its own vector), and the whole device-assignment story held.
fn judge_edu_beside(out: &Outcome) {
    assert_logged(out, "partition edu: guest reports irq_count = 0x3");
    assert_logged(out, "partitions: the device-assignment story held");
}

/// Where the probe aims inside the partition: the page above its queues, in the memory
/// `memmap=` reserved (so `/init` can read what landed through `/dev/mem`).
const PROBE_INSIDE: u64 = xtask::linux_guest::DMA_PROBE_QUEUES + 0x2000;
/// Where the probe aims outside: 256 MiB, above the partition's 128 MiB of memory, so no
/// mapping of its IOMMU domain covers it.
const PROBE_OUTSIDE: u64 = 0x1000_0000;

/// The default command line (`linux::DEFAULT_CMDLINE` in the kernel).
const DEFAULT_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 acpi=off noapic nokaslr no5lvl tsc=reliable mitigations=off reboot=t panic=-1";

/// The default command line with the probe's memory reserved and its two targets.
fn probe_cmdline() -> String {
    use xtask::linux_guest::{dma_probe_reserve, DMA_PROBE_PARAM};
    format!(
        "{DEFAULT_CMDLINE} {} {DMA_PROBE_PARAM}{PROBE_INSIDE:#x} {DMA_PROBE_PARAM}{PROBE_OUTSIDE:#x}",
        dma_probe_reserve()
    )
}

/// The probe's results, in both boots: the Identify data aimed inside the partition
/// landed (its first bytes are the controller's PCI vendor id, 1b36: the command and the
/// queues work, the control), and the same command aimed outside completed. QEMU's
/// controller reports success for a transfer the IOMMU refused (docs/qemu.md), so the
/// completion proves nothing about the refusal: VT-d's fault record does
/// ([`debian_linux_boots_in_a_partition_through_vtd`]).
fn judge_dma_probe(out: &Outcome) {
    let said =
        |text: &str| out.log.lines().filter(|l| l.contains(GUEST_TEXT) && l.contains(text)).count();
    let probe = marker::DMA_PROBE;
    let inside = format!("{probe} {PROBE_INSIDE:#x} status 0 reads 0x1B36");
    let outside = format!("{probe} {PROBE_OUTSIDE:#x} status 0 reads -");
    assert_eq!((said(&inside), said(&outside)), (2, 2), "{inside:?} {outside:?}\n{}", out.log);
    // The control's DMA faulted nowhere.
    let at_inside = format!("fault addr {PROBE_INSIDE:#x} ");
    assert!(!out.log.contains(&at_inside), "{}", out.log);
}

/// Where the edu device of the partition beside Linux sits.
const EDU_SLOT: u8 = 4;

/// Whether the guest was to write sector 2.
#[derive(PartialEq, Eq, Debug)]
enum Written {
    Yes,
    No,
}

/// The disk image after the run, read by the host: sectors 0 and 1 keep their patterns,
/// sector 2 holds what `/init` wrote (or, when it was not to write, what it held before).
fn judge_disk(g: &LinuxGuest, written: Written) {
    let disk = std::fs::read(temp("disk.img")).expect("read the disk image back");
    let original = std::fs::read(&g.disk).expect("read the original disk image");
    assert_eq!(&disk[..1024], &original[..1024], "sectors 0 and 1 changed");
    let sector2 = &disk[1024..1536];
    let expected = format!("{}-{}", xtask::linux_guest::GUEST_WRITE, g.release);
    match written {
        Written::Yes => assert!(
            sector2.starts_with(expected.as_bytes()),
            "sector 2 on the image: {:?}",
            String::from_utf8_lossy(&sector2[..48])
        ),
        Written::No => assert_eq!(sector2, &original[1024..1536], "sector 2 changed"),
    }
}

/// The part of a boot after the kernel's own start: `/init` runs and prints its markers,
/// the nvme driver sets up its queues (MSI-X), `/init` verifies its read and write and
/// reboots, and the hypervisor sees a triple fault (`reboot=t`).
fn judge_init_and_nvme(out: &Outcome) {
    let said = |text: &str| out.log.lines().any(|l| l.contains(GUEST_TEXT) && l.contains(text));
    for text in [
        "Run /init as init process",
        marker::INIT,
        marker::MODULES,
        "nvme nvme0: pci function 0000:00:01.0",
        "nvme nvme0: 1/0/0 default/read/poll queues",
        &format!("{} read+write verified on /dev/nvme0n1", marker::NVME_OK),
        "reboot: Restarting system",
    ] {
        assert!(said(text), "expected {text:?} from the guest\n{}", out.log);
    }
    assert!(!said(marker::NVME_FAIL), "{}", out.log);
    assert!(!said("probe failure"), "{}", out.log);
    judge_triple_fault(out);
}

/// The Linux run ended with the guest's reboot (a triple fault with `reboot=t`).
fn judge_triple_fault(out: &Outcome) {
    let end = out.log.lines().find(|l| l.contains("partition linux: Linux ran ")).unwrap_or("");
    eprintln!("{}", end.trim());
    assert!(
        end.contains("the guest shut down (triple fault"),
        "the Linux run ended otherwise: {end}\n{}",
        out.log
    );
}

/// The control's end: the nvme driver probes and gives up (no interrupt it can use),
/// `/init` reports the missing namespace and reboots.
fn judge_init_and_reboot(out: &Outcome) {
    let said = |text: &str| out.log.lines().any(|l| l.contains(GUEST_TEXT) && l.contains(text));
    for text in [
        "Run /init as init process",
        marker::INIT,
        marker::MODULES,
        "nvme nvme0: pci function 0000:00:01.0",
        // -EINVAL from pci_alloc_irq_vectors: no MSI-X table is emulated for the device.
        "nvme nvme0: Removing after probe failure status: -22",
        &format!("{} no /dev/nvme0n1", marker::NVME_FAIL),
        "reboot: Restarting system",
    ] {
        assert!(said(text), "expected {text:?} from the guest\n{}", out.log);
    }
    judge_triple_fault(out);
}

/// The control: the same kernel with its setup-header signature broken, and the real
/// kernel in too little memory, are refused before anything starts, each with the
/// loader's reason.
#[test]
fn corrupted_or_cramped_linux_is_refused() {
    let g = ensure().unwrap_or_else(|e| panic!("the Linux guest: {e}"));
    let mut bytes = std::fs::read(&g.kernel).expect("read the kernel");
    bytes[0x202..0x206].copy_from_slice(b"HdrX");
    let bad = temp("vmlinuz-corrupted");
    std::fs::write(&bad, &bytes).expect("write the corrupted kernel");
    let cfg = format!(
        "{}partition small\n  memory 64M\n  image linux:{}\n",
        config(&g, &file_name(&bad), "128M"),
        file_name(&g.kernel)
    );
    let m = linux_machine(
        Iommu::Intel { aw_bits: None, caching_mode: false },
        &g,
        &cfg,
        &[bad, g.kernel.clone(), g.initrd.clone()],
    );
    let out = boot(&m);
    assert_ne!(out.verdict, Verdict::Success, "{}", out.log);
    assert_logged(
        &out,
        "partition `linux`: Linux image refused: not a Linux bzImage: no \"HdrS\" setup-header signature at 0x202",
    );
    assert_logged(&out, "partition `small`: a Linux guest needs at least 96 MiB, it has 64 MiB");
    assert_logged(&out, "partition `small`: Linux image refused: the Linux kernel needs memory up to 80 MiB (load address + init_size), the partition has 64 MiB");
    assert!(!out.log.contains("Linux version"), "a refused kernel ran");
}

/// Without a local APIC (`nolapic`) Linux keeps the 8259 alone ("Keep in PIC mode"), its
/// timer the PIT's IRQ 0: the 8250 driver takes the UART for a 16550A, PCI is probed
/// through the trapped configuration mechanism (the virtual host bridge at 00:00.0, the
/// NVMe controller at 00:01.0 with BAR0 where the nested tables map it), `/init` runs and
/// loads the nvme modules, and the driver enables the device and reads its registers
/// through the passed-through BAR. The control for the read and write: without a local
/// APIC Linux has no MSI domain, so the driver cannot use the MSI-X it is shown (and
/// there is no INTx pin), gives up, `/init` reboots, no interrupt reaches a host vector,
/// and the disk image is left as it was.
#[test]
fn debian_linux_probes_its_nvme_through_the_virtual_config_space() {
    let g = ensure().unwrap_or_else(|e| panic!("the Linux guest: {e}"));
    let cfg = format!(
        "{}  cmdline \"{}\"\n",
        config(&g, &file_name(&g.kernel), "128M"),
        nolapic_cmdline()
    );
    let m = linux_machine(
        Iommu::Intel { aw_bits: None, caching_mode: false },
        &g,
        &cfg,
        &[g.kernel.clone(), g.initrd.clone()],
    );
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Success, "{}\n{}", out.describe(), out.log);
    let said = |text: &str| out.log.lines().any(|l| l.contains(GUEST_TEXT) && l.contains(text));
    for text in [
        "APIC: Keep in PIC mode(8259)",
        "serial8250: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A",
        "PCI: Using configuration type 1 for base access",
        "pci 0000:00:00.0: [8086:29c0] type 00 class 0x060000",
        "pci 0000:00:01.0: [1b36:0010] type 00 class 0x010802",
        "pci 0000:00:01.0: BAR 0 [mem 0xc0000000-0xc0003fff 64bit]",
        "Run /init as init process",
        "nvme nvme0: pci function 0000:00:01.0",
        "nvme 0000:00:01.0: enabling device (0000 -> 0002)",
        // -EINVAL from pci_alloc_irq_vectors: no MSI-X, MSI or INTx for the device
        // (after the CSTS read through the BAR, which would have given -ENODEV).
        "nvme nvme0: Removing after probe failure status: -22",
    ] {
        assert!(said(text), "expected {text:?} from the guest\n{}", out.log);
    }
    judge_init_and_reboot(&out);
    assert_logged(
        &out,
        &format!("partition linux: 0000:00:{NVME_SLOT:02x}.0 reset by function-level reset (PCIe)"),
    );
    assert_logged(&out, "partition linux: 00:01.0 MSI-X: 0 interrupts taken at its host vectors");
    judge_disk(&g, Written::No);
}

/// The control for the pattern check: a disk whose sector 0 holds another pattern. The
/// driver works (MSI-X), `/init` reads the wrong pattern, says so, and writes nothing:
/// the image's sector 2 is as it was.
#[test]
fn a_disk_with_a_wrong_pattern_fails_the_guests_check() {
    let g = ensure().unwrap_or_else(|e| panic!("the Linux guest: {e}"));
    let cfg = temp("partitions.cfg");
    std::fs::write(&cfg, config(&g, &file_name(&g.kernel), "128M")).expect("write the cfg");
    let mut disk = std::fs::read(&g.disk).expect("read the disk image");
    disk[..8].copy_from_slice(b"WRONG-PA");
    std::fs::write(temp("disk.img"), &disk).expect("write the disk image");
    let m = linux_machine_on(
        Iommu::Intel { aw_bits: None, caching_mode: false },
        &temp("disk.img"),
        cfg,
        &[g.kernel.clone(), g.initrd.clone()],
    );
    let out = boot(&m);
    assert_eq!(out.verdict, Verdict::Success, "{}\n{}", out.describe(), out.log);
    let said = |text: &str| out.log.lines().any(|l| l.contains(GUEST_TEXT) && l.contains(text));
    assert!(said("nvme nvme0: 1/0/0 default/read/poll queues"), "{}", out.log);
    // (The host log escapes the guest's quotes.)
    let wrong = format!("{} sector 0 reads \\'WRONG-PAT", marker::NVME_FAIL);
    assert!(said(&wrong), "expected {wrong:?}\n{}", out.log);
    assert!(!said(marker::NVME_OK), "{}", out.log);
    judge_triple_fault(&out);
    let after = std::fs::read(temp("disk.img")).expect("read the disk image back");
    assert_eq!(after, disk, "the image changed though the check failed");
}
