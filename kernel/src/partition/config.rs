//! Partition configuration on the machine: find the configuration (a boot module whose
//! file name ends in `.cfg`, or the built-in default), check it against what the boot
//! discovered (devices exist and sit behind an IOMMU, guest images exist, memory
//! suffices), then create every partition before running any: nothing starts
//! half-configured.

use super::{Budget, Partition, Stop};
use crate::pci::Bdf;
use crate::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use boot::partition_config::{self, DeviceAddr, GuestImage, PartitionConfig, PartitionSpec};
use boot::BootInfo;

/// Host memory kept free beyond all partitions (heap growth, tables, IOMMU structures).
const HOST_RESERVE: u64 = 16 << 20;

/// The file name (path and arguments stripped) a boot module is known by.
pub fn module_name<'a>(info: &'a BootInfo, m: &boot::Module) -> &'a str {
    let full = info.string(m.name);
    let first = full.split_whitespace().next().unwrap_or("");
    first.rsplit('/').next().unwrap_or(first)
}

fn module_bytes(m: &boot::Module) -> &'static [u8] {
    // SAFETY: boot modules lie in RAM the frame allocator never hands out (kept at
    // init), identity-mapped, and nothing writes them.
    unsafe { core::slice::from_raw_parts(m.start as *const u8, (m.end - m.start) as usize) }
}

/// The configuration text and where it came from.
pub fn find_config(info: &'static BootInfo) -> Result<(&'static str, String), String> {
    match info.modules().iter().find(|m| module_name(info, m).ends_with(".cfg")) {
        Some(m) => {
            let name = module_name(info, m);
            let text = core::str::from_utf8(module_bytes(m))
                .map_err(|_| format!("partition configuration module {name} is not UTF-8 text"))?;
            Ok((text.trim_end_matches('\0'), format!("module {name}")))
        }
        None => Ok((partition_config::DEFAULT_CONFIG, "built-in default".into())),
    }
}

fn bdf(d: &DeviceAddr) -> Bdf {
    Bdf { segment: d.segment, bus: d.bus, device: d.device, function: d.function }
}

/// Whether an IOMMU translates `dev`'s DMA: the boot routed it to a unit that was
/// brought up (DRHD device scope or include-all on VT-d, IVHD device entries on AMD-Vi).
pub fn behind_iommu(platform: &Platform, dev: Bdf) -> bool {
    platform.iommu.route(dev).is_some()
}

/// The image bytes a partition runs.
pub fn image_for(platform: &Platform, spec: &PartitionSpec<'_>) -> Result<&'static [u8], String> {
    match spec.image {
        GuestImage::Builtin => Ok(super::BUILTIN_GUEST),
        GuestImage::Module(name) => platform
            .boot
            .modules()
            .iter()
            .find(|m| module_name(platform.boot, m) == name)
            .map(module_bytes)
            .ok_or_else(|| format!("partition `{}`: no boot module named `{name}`", spec.name)),
    }
}

/// Checks a parsed configuration against the machine. Every problem is reported, not
/// only the first; `Err` carries them all, one per line.
pub fn validate(cfg: &PartitionConfig<'_>, platform: &Platform) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Err(e) = super::svm::enable() {
        problems.push(format!("partitions need AMD SVM with nested paging: {e}"));
    }
    let mut total = 0u64;
    for p in cfg.partitions() {
        total += p.memory;
        if let Err(e) = image_for(platform, p) {
            problems.push(e);
        }
        for d in p.devices() {
            let b = bdf(d);
            if !platform.pci.iter().any(|f| f.bdf == b) {
                problems.push(format!(
                    "partition `{}`: device {b} does not exist on this machine",
                    p.name
                ));
            } else if !behind_iommu(platform, b) {
                problems.push(format!(
                    "partition `{}`: device {b} sits behind no IOMMU, so its DMA could not be confined",
                    p.name
                ));
            }
        }
    }
    let free = crate::mem::frames::free_frames() * 4096;
    if total + HOST_RESERVE > free {
        problems.push(format!(
            "partitions need {} MiB but only {} MiB are free (keeping {} MiB for the host)",
            total >> 20,
            free.saturating_sub(HOST_RESERVE) >> 20,
            HOST_RESERVE >> 20
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Gives a new partition its configured devices. Phase 1 only records them (no BAR is
/// passed through and no DMA allowed without an IOMMU). Phase 2, per device, in order:
/// attach its requester id to the partition's IOMMU domain; map every
/// `GuestMemory::contiguous_runs()` run gpa -> hpa through the DMA tracker; then
/// `Partition::assign_device(function)` (BAR0 into the nested tables) and set
/// `partition.device.dma_allowed`. A failure there must fail `create_all` (the dropped
/// partitions tear down through `before_memory_release`).
fn attach_devices(p: &mut Partition, spec: &PartitionSpec<'_>) {
    p.devices = spec.devices().iter().map(bdf).collect();
}

/// Parses, validates and creates every partition of `text` (all or none).
pub fn create_all(text: &str, platform: &Platform) -> Result<Vec<Partition>, String> {
    let cfg = partition_config::parse(text).map_err(|e| format!("{e}"))?;
    validate(&cfg, platform)?;
    let mut made = Vec::new();
    for spec in cfg.partitions() {
        let image = image_for(platform, spec)?;
        match Partition::create(spec, image) {
            Ok(mut p) => {
                attach_devices(&mut p, spec);
                made.push(p);
            }
            // Dropping `made` tears the others down: nothing stays half-configured.
            Err(e) => return Err(format!("partition `{}`: {e}", spec.name)),
        }
    }
    Ok(made)
}

/// The time-stamp counter, for cost reports.
fn cycles() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter (CR4.TSD is clear in ring 0 anyway).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The boot's partition story: load the configuration, create every partition, run
/// each guest to completion, destroy them, and say what happened.
pub fn run_configured(platform: &mut Platform) -> Result<(), String> {
    let (text, source) = find_config(platform.boot)?;
    log::info!("partitions: configuration from the {source}");
    let partitions = create_all(text, platform)?;
    for p in &partitions {
        let m = p.memory().map_or(0, |m| m.size());
        let (small, large) = p.nested_tables().map_or((0, 0), |t| t.leaves);
        log::info!(
            "partition {}: created, {} MiB {}-backed, nested leaves {small} x 4K + {large} x 2M, {} vCPU",
            p.name,
            m >> 20,
            p.memory().map_or(boot::partition_config::Backing::Pages4K, |m| m.backing()),
            p.backend_name(),
        );
        for d in &p.devices {
            log::info!(
                "partition {}: owns {d} (not attached yet: no BAR, no DMA for the guest)",
                p.name
            );
        }
    }
    let mut failures = Vec::new();
    let mut done = Vec::new();
    for mut p in partitions {
        let r = p.run(Budget::DEFAULT).map_err(|e| format!("partition {}: {e}", p.name))?;
        log::info!(
            "partition {}: stopped: {:?} after {} exits, {} hypercalls, {} ticks",
            p.name,
            r.stop,
            r.exits,
            r.hypercalls,
            r.ticks
        );
        for (check, value) in &p.reports {
            log::info!(
                "partition {}: guest reports {} = {value:#x}",
                p.name,
                guest::check_name(*check)
            );
        }
        if r.stop != Stop::Done(0) {
            failures.push(format!("partition {}: guest ended with {:?}", p.name, r.stop));
        }
        done.push(p);
    }
    for p in done {
        let name = p.name.clone();
        let (t0, c0) = (crate::apic::ticks(), cycles());
        let bytes = p.destroy();
        log::info!(
            "partition {name}: destroyed, {} MiB scrubbed and returned in {} ticks ({} M cycles)",
            bytes >> 20,
            crate::apic::ticks() - t0,
            (cycles() - c0) / 1_000_000
        );
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
