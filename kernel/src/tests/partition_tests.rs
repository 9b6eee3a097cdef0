//! Partitions under SVM with nested paging: the guest runs and reports, its memory writes
//! land at the host-physical addresses the nested tables name, every kind of exit ends a
//! run the way it should, a runaway guest is stopped by its budget, and destroy scrubs.

use crate::ensure;
use crate::mem::frames;
use crate::partition::npt::MemoryType;
use crate::partition::{
    Budget, GuestDevice, Partition, PartitionError, State, Stop, BUILTIN_GUEST,
};
use crate::testing::{TestContext, TestResult};
use alloc::format;
use alloc::vec::Vec;
use boot::partition_config::{Backing, PartitionSpec};
use guest::{check, scenario};

const MIB: u64 = 1 << 20;

/// Frames free now, after SVM's one-time host save area is in place (so a later
/// comparison measures only what partitions take and give back).
fn free_frames_after_svm() -> Result<u64, alloc::string::String> {
    crate::partition::backend::enable().map_err(|e| format!("{e}"))?;
    Ok(frames::free_frames())
}

fn create(name: &str, memory: u64, backing: Backing) -> Result<Partition, alloc::string::String> {
    Partition::create(&PartitionSpec::new(name, memory, backing), BUILTIN_GUEST)
        .map_err(|e| format!("create {name}: {e}"))
}

fn run(p: &mut Partition, budget: Budget) -> Result<Stop, alloc::string::String> {
    let r = p.run(budget).map_err(|e| format!("run {}: {e}", p.name))?;
    log::info!(
        "partition {}: {:?} after {} exits, {} hypercalls, {} ticks",
        p.name,
        r.stop,
        r.exits,
        r.hypercalls,
        r.ticks
    );
    Ok(r.stop)
}

/// Every page the guest stamped holds its stamp at the host address both the memory map
/// and an independent walk of the nested tables give.
fn stamps_at_host_addresses(p: &Partition) -> TestResult {
    let mem = p.memory().ok_or("no memory")?;
    let npt = p.nested_tables().ok_or("no nested tables")?;
    let mut gpa = guest::PROBE_START;
    let mut pages = 0;
    while gpa < mem.size() {
        let host = mem.host_address(gpa).ok_or("gpa not backed")?;
        let (walked, leaf, ty) =
            npt.translate(gpa).ok_or(format!("{gpa:#x} not in the nested tables"))?;
        ensure!(walked == host, "nested walk of {gpa:#x} gives {walked:#x}, memory says {host:#x}");
        ensure!(
            leaf == mem.backing().page_size(),
            "leaf of {leaf:#x} bytes for {} backing",
            mem.backing()
        );
        ensure!(ty == MemoryType::WriteBack, "guest RAM mapped {ty:?}");
        // SAFETY: `host` is an aligned word of a frame the partition owns (identity-mapped).
        let word = unsafe { core::ptr::read_volatile(host as *const u64) };
        ensure!(word == guest::page_stamp(gpa), "host {host:#x} (gpa {gpa:#x}) holds {word:#x}");
        pages += 1;
        gpa += 4096;
    }
    // The contiguous runs (what an IOMMU mapping walks) cover RAM exactly, in order.
    let mut next = 0;
    for (g, h, len) in mem.contiguous_runs() {
        ensure!(g == next && len > 0, "run at {g:#x} after {next:#x}");
        ensure!(
            mem.host_address(g + len - 1) == Some(h + len - 1),
            "run {g:#x}+{len:#x} is not contiguous"
        );
        next = g + len;
    }
    ensure!(next == mem.size(), "runs cover {next:#x} of {:#x}", mem.size());
    log::info!("{} backing: {} contiguous runs", mem.backing(), mem.contiguous_runs().count());
    ensure!(
        p.reported(check::PAGES_STAMPED) == Some(pages),
        "guest stamped {:?} pages, host found {pages}",
        p.reported(check::PAGES_STAMPED)
    );
    Ok(())
}

fn guest_runs_and_reports(backing: Backing) -> TestResult {
    let free = free_frames_after_svm()?;
    let mut p = create("t", 8 * MIB, backing)?;
    let leaves = p.nested_tables().map(|t| t.leaves).unwrap_or_default();
    let want = match backing {
        Backing::Pages4K => (2048, 0),
        Backing::Pages2M => (0, 4),
    };
    ensure!(leaves == want, "nested leaves {leaves:?}, expected {want:?}");
    if backing == Backing::Pages2M {
        let chunks = p.memory().map(|m| m.chunks().to_vec()).unwrap_or_default();
        ensure!(chunks.iter().all(|c| c % (2 * MIB) == 0), "2M chunks not 2M-aligned: {chunks:x?}");
    }
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(stop == Stop::Done(0), "guest ended with {stop:?}");
    ensure!(p.messages.iter().any(|m| m == "started"), "no log hypercall: {:?}", p.messages);
    ensure!(p.reported(check::NONZERO_WORDS) == Some(0), "fresh memory not zero: {:?}", p.reports);
    stamps_at_host_addresses(&p)?;
    ensure!(p.state() == State::Stopped, "state {:?} after done", p.state());
    p.destroy();
    ensure!(
        frames::free_frames() == free,
        "{} frames leaked",
        free as i64 - frames::free_frames() as i64
    );
    Ok(())
}

/// 4K-backed: the guest runs in long mode under nested paging and reports.
pub fn guest_4k(_: &mut TestContext<'_>) -> TestResult {
    guest_runs_and_reports(Backing::Pages4K)
}

/// 2M-backed: the same with 2 MiB nested leaves over 2 MiB-aligned host runs.
pub fn guest_2m(_: &mut TestContext<'_>) -> TestResult {
    guest_runs_and_reports(Backing::Pages2M)
}

/// VMMCALL is a hypercall too.
pub fn vmmcall(_: &mut TestContext<'_>) -> TestResult {
    let mut p = create("vmmcall", 4 * MIB, Backing::Pages4K)?;
    p.scenario = scenario::NORMAL_VMMCALL;
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(stop == Stop::Done(0), "guest ended with {stop:?}");
    ensure!(p.reported(check::PAGES_STAMPED) == Some(512), "reports {:?}", p.reports);
    Ok(())
}

/// HLT ends the run, and a stopped partition refuses to run again.
pub fn hlt_exit(_: &mut TestContext<'_>) -> TestResult {
    let mut p = create("hlt", 2 * MIB, Backing::Pages2M)?;
    p.scenario = scenario::HALT;
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(stop == Stop::Halted, "guest ended with {stop:?}");
    ensure!(
        p.run(Budget::DEFAULT).err() == Some(PartitionError::Stopped),
        "a halted guest ran again"
    );
    Ok(())
}

/// A fault with no guest IDT: an intercepted #UD by default; a triple-fault shutdown
/// when exceptions are not intercepted.
pub fn shutdown_exit(_: &mut TestContext<'_>) -> TestResult {
    let mut p = create("ud", 2 * MIB, Backing::Pages4K)?;
    p.scenario = scenario::TRIPLE_FAULT;
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(matches!(stop, Stop::Exception { vector: 6, .. }), "expected #UD, got {stop:?}");
    let mut p = create("shutdown", 2 * MIB, Backing::Pages4K)?;
    p.scenario = scenario::TRIPLE_FAULT;
    p.set_exception_intercepts(0);
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(stop == Stop::Shutdown, "expected a shutdown, got {stop:?}");
    Ok(())
}

/// A guest that never stops is stopped by its budget, each time it is resumed.
pub fn runaway_budget(_: &mut TestContext<'_>) -> TestResult {
    let mut p = create("runaway", 2 * MIB, Backing::Pages4K)?;
    p.scenario = scenario::RUNAWAY;
    for round in 0..2 {
        let r = p.run(Budget { ticks: 40, exits: u64::MAX }).map_err(|e| format!("{e}"))?;
        log::info!("runaway round {round}: {:?}, {} exits in {} ticks", r.stop, r.exits, r.ticks);
        ensure!(r.stop == Stop::BudgetExhausted, "round {round} ended with {:?}", r.stop);
        ensure!(
            (41..200).contains(&r.ticks),
            "round {round} took {} ticks for a 40-tick budget",
            r.ticks
        );
        ensure!(p.state() == State::Paused, "state {:?}", p.state());
    }
    let r = p.run(Budget { ticks: u64::MAX, exits: 25 }).map_err(|e| format!("{e}"))?;
    ensure!(r.stop == Stop::BudgetExhausted && r.exits == 26, "exit budget: {r:?}");
    p.stop();
    ensure!(p.run(Budget::DEFAULT).err() == Some(PartitionError::Stopped), "a stopped guest ran");
    Ok(())
}

/// Destroy scrubs: the frames read zero afterwards, and a partition re-created in the
/// same frames sees only zeros; every frame comes back to the allocator.
pub fn destroy_scrubs(_: &mut TestContext<'_>) -> TestResult {
    let free = free_frames_after_svm()?;
    let mut p = create("scrub", 4 * MIB, Backing::Pages4K)?;
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(stop == Stop::Done(0), "first guest ended with {stop:?}");
    let chunks: Vec<u64> = p.memory().map(|m| m.chunks().to_vec()).unwrap_or_default();
    let nonzero = |c: u64| {
        (0..4096)
            .step_by(8)
            .filter(|o| {
                // SAFETY: a frame of the partition's memory (kept, not freed), identity-mapped.
                let w = unsafe { core::ptr::read_volatile((c + o) as *const u64) };
                w != 0
            })
            .count()
    };
    let before: usize = chunks.iter().map(|&c| nonzero(c)).sum();
    ensure!(before > 512, "the guest left only {before} nonzero words to scrub");
    let mem = p.destroy_keeping_memory().ok_or("teardown kept no memory")?;
    let after: usize = chunks.iter().map(|&c| nonzero(c)).sum();
    ensure!(after == 0, "{after} nonzero words survived the scrub");
    ensure!(mem.chunks() == chunks.as_slice(), "memory came back different");
    let mut again =
        Partition::create_in("scrub2", mem, BUILTIN_GUEST).map_err(|e| format!("{e}"))?;
    let stop = run(&mut again, Budget::DEFAULT)?;
    ensure!(stop == Stop::Done(0), "re-created guest ended with {stop:?}");
    ensure!(
        again.reported(check::NONZERO_WORDS) == Some(0),
        "re-created guest saw old data: {:?}",
        again.reports
    );
    let bytes = again.destroy();
    ensure!(bytes == 4 * MIB, "destroy returned {bytes} bytes");
    ensure!(
        frames::free_frames() == free,
        "{} frames leaked",
        free as i64 - frames::free_frames() as i64
    );
    Ok(())
}

/// A device BAR mapped uncached into the nested tables: the guest reads the edu's
/// identification and passes its liveness check itself (no DMA without an IOMMU).
pub fn device_bar_passthrough(ctx: &mut TestContext<'_>) -> TestResult {
    let f = ctx
        .platform
        .pci
        .iter()
        .find(|f| f.vendor == 0x1234 && f.device == 0x11e8)
        .ok_or("no edu device")?;
    let (base, size) = f.memory_bar(0).ok_or("edu has no BAR0")?;
    let host_id =
        crate::mmio::MmioWindow::map(base, 4096).map_err(alloc::string::String::from)?.read32(0);
    let mut p = create("bar", 4 * MIB, Backing::Pages4K)?;
    ensure!(p.map_device_bar(0x1000, base, size).is_err(), "a BAR over guest RAM was accepted");
    let gpa = p.assign_device(f).map_err(|e| format!("{e}"))?;
    ensure!(gpa == crate::partition::DEVICE_WINDOW, "BAR placed at {gpa:#x}");
    let t = p.nested_tables().and_then(|t| t.translate(gpa + 0x1234));
    ensure!(t == Some((base + 0x1234, 4096, MemoryType::Uncached)), "BAR walk gives {t:x?}");
    let d = p.device.ok_or("no device in the boot page")?;
    ensure!(d.bar_gpa == gpa && d.bar_size == size && !d.dma_allowed, "boot-page device {d:?}");
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(stop == Stop::Done(0), "guest ended with {stop:?}");
    ensure!(
        p.reported(check::EDU_ID) == Some(host_id as u64),
        "guest read id {:?}, host {host_id:#x}",
        p.reported(check::EDU_ID)
    );
    ensure!(p.reported(check::EDU_ALIVE) == Some(1), "liveness {:?}", p.reported(check::EDU_ALIVE));
    ensure!(p.reported(check::DMA_OWN_MATCHED).is_none(), "guest ran DMA without an IOMMU");
    Ok(())
}

/// A guest-physical access nothing maps is a nested page fault at that address.
pub fn unmapped_access_faults(_: &mut TestContext<'_>) -> TestResult {
    let mut p = create("npf", 2 * MIB, Backing::Pages4K)?;
    p.device = Some(GuestDevice {
        bar_gpa: 0xD000_0000,
        bar_size: 4096,
        dma_allowed: false,
        pci_id: guest::EDU_PCI_ID,
    });
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(
        matches!(stop, Stop::NestedPageFault { gpa: 0xD000_0000, .. }),
        "expected a nested fault, got {stop:?}"
    );
    Ok(())
}

/// The built-in guest told its device is not an edu leaves the BAR alone: the same
/// unmapped BAR as [`unmapped_access_faults`] (which proves the guest does touch an edu
/// BAR there) gives no nested fault, and the guest reports the id it refused.
pub fn builtin_guest_refuses_other_devices(_: &mut TestContext<'_>) -> TestResult {
    let mut p = create("notedu", 2 * MIB, Backing::Pages4K)?;
    let ahci = 0x2922_8086;
    p.device = Some(GuestDevice {
        bar_gpa: 0xD000_0000,
        bar_size: 4096,
        dma_allowed: false,
        pci_id: ahci,
    });
    let stop = run(&mut p, Budget::DEFAULT)?;
    ensure!(matches!(stop, Stop::Done(s) if s & 4 != 0), "guest ended with {stop:?}");
    ensure!(
        p.reported(check::DEVICE_REFUSED) == Some(ahci),
        "refusal {:?}",
        p.reported(check::DEVICE_REFUSED)
    );
    ensure!(p.reported(check::EDU_ID).is_none(), "the guest read the BAR");
    Ok(())
}

/// Bad images are refused and leave nothing allocated.
pub fn bad_image_refused(_: &mut TestContext<'_>) -> TestResult {
    let free = free_frames_after_svm()?;
    let spec = PartitionSpec::new("bad", 2 * MIB, Backing::Pages4K);
    let e = Partition::create(&spec, b"not an elf at all").err();
    ensure!(
        e == Some(PartitionError::Image(crate::partition::image::ImageError::NotElf)),
        "got {}",
        shown(e)
    );
    let e = Partition::create(&spec, &[]).err();
    ensure!(
        e == Some(PartitionError::Image(crate::partition::image::ImageError::Missing)),
        "got {}",
        shown(e)
    );
    // A real image whose header is cut short.
    let e = Partition::create(&spec, &BUILTIN_GUEST[..70]).err();
    ensure!(
        e == Some(PartitionError::Image(crate::partition::image::ImageError::Truncated)),
        "got {}",
        shown(e)
    );
    ensure!(frames::free_frames() == free, "a refused partition leaked frames");
    Ok(())
}

/// The edu at 00:04.0.
fn f_bdf(platform: &crate::Platform) -> Result<crate::pci::Bdf, alloc::string::String> {
    let want = crate::pci::Bdf { segment: 0, bus: 0, device: 4, function: 0 };
    platform
        .pci
        .iter()
        .find(|f| f.bdf == want)
        .map(|f| f.bdf)
        .ok_or_else(|| "no device at 00:04.0".into())
}

/// The configuration is checked against the machine, all or nothing.
pub fn config_validation(ctx: &mut TestContext<'_>) -> TestResult {
    use crate::partition::config::create_all;
    let platform = &mut *ctx.platform;
    let free = free_frames_after_svm()?;
    let refuse = |platform: &mut crate::Platform, text: &str, words: &str| -> TestResult {
        match create_all(text, platform) {
            Ok(_) => Err(format!("accepted:\n{text}")),
            Err(e) if e.contains(words) => {
                log::info!("refused as expected: {e}");
                Ok(())
            }
            Err(e) => Err(format!("refused with `{e}`, expected `{words}`")),
        }
    };
    refuse(platform, "partition a\n memory 4M\n cpus 2\n", "only 1 virtual CPU")?;
    refuse(
        platform,
        "partition a\n memory 4M\n device 00:1e.0\n",
        "device 0000:00:1e.0 does not exist",
    )?;
    refuse(
        platform,
        "partition a\n memory 4M\n image module:nothing.elf\n",
        "no boot module named `nothing.elf`",
    )?;
    refuse(platform, "partition a\n memory 3G\npartition b\n memory 3G\n", "only")?;
    refuse(
        platform,
        "partition a\n memory 4M\n device 00:04.0\npartition b\n memory 4M\n device 00:04.0\n",
        "assigned to both",
    )?;
    let edu = "partition a\n memory 4M\n device 00:04.0\n";
    // (Checked before an accepted attach, which may make the unit build its context
    // table or device-table pages once.)
    ensure!(frames::free_frames() == free, "refused configurations leaked frames");
    if crate::partition::config::behind_iommu(platform, f_bdf(platform)?) {
        let made = create_all(edu, platform)?;
        let attached = made.len() == 1
            && made[0].devices.len() == 1
            && made[0].device.is_some_and(|d| d.dma_allowed);
        crate::partition::config::destroy_all(made, platform);
        // Destroy left the device's bus mastering off; the platform's edu driver wants it.
        platform.edus.iter().for_each(|e| e.set_bus_master(true));
        ensure!(attached, "one partition with one attached device expected");
    } else {
        refuse(platform, edu, "sits behind no IOMMU")?;
    }
    Ok(())
}

/// A create's error in words, or that there was none.
fn shown(e: Option<PartitionError>) -> alloc::string::String {
    e.map_or_else(|| "no error".into(), |e| format!("{e}"))
}
