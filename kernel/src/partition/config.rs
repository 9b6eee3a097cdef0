//! Partition configuration on the machine: find the configuration (a boot module whose
//! file name ends in `.cfg`, or the built-in default), check it against what the boot
//! discovered (devices exist and sit behind an IOMMU, guest images exist, memory
//! suffices), then create every partition before running any: nothing starts
//! half-configured.

use super::Partition;
use crate::mem::frames;
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

/// A boot module's bytes; `Err` when the loader put it where the kernel maps nothing
/// (paging maps only the memory map's RAM and ACPI ranges).
fn module_bytes(info: &BootInfo, m: &boot::Module) -> Result<&'static [u8], String> {
    let len = m.end.saturating_sub(m.start);
    if !crate::mem::paging::is_range_mapped(m.start, len) {
        return Err(format!(
            "boot module {} at {:#x}-{:#x} is not in mapped RAM",
            module_name(info, m),
            m.start,
            m.end
        ));
    }
    let len = usize::try_from(len).map_err(|_| String::from("boot module too large"))?;
    // SAFETY: [start, end) is mapped (checked above) identity, in RAM the frame allocator
    // never hands out (kept at init), and nothing writes boot modules.
    Ok(unsafe { core::slice::from_raw_parts(m.start as *const u8, len) })
}

/// Whether the boot loader passed a configuration module (a `.cfg` file).
pub fn has_config_module(info: &BootInfo) -> bool {
    info.modules().iter().any(|m| module_name(info, m).ends_with(".cfg"))
}

/// The configuration text and where it came from.
pub fn find_config(info: &'static BootInfo) -> Result<(&'static str, String), String> {
    match info.modules().iter().find(|m| module_name(info, m).ends_with(".cfg")) {
        Some(m) => {
            let name = module_name(info, m);
            let text = core::str::from_utf8(module_bytes(info, m)?)
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

/// The bytes of the boot module named `name`, for partition `spec`.
fn module_named(
    platform: &Platform,
    spec: &PartitionSpec<'_>,
    name: &str,
) -> Result<&'static [u8], String> {
    platform
        .boot
        .modules()
        .iter()
        .find(|m| module_name(platform.boot, m) == name)
        .ok_or_else(|| format!("partition `{}`: no boot module named `{name}`", spec.name))
        .and_then(|m| module_bytes(platform.boot, m))
}

/// The image bytes a partition runs (a Linux partition's kernel).
pub fn image_for(platform: &Platform, spec: &PartitionSpec<'_>) -> Result<&'static [u8], String> {
    match spec.image {
        GuestImage::Builtin => Ok(super::BUILTIN_GUEST),
        GuestImage::Module(name) | GuestImage::Linux(name) => module_named(platform, spec, name),
    }
}

/// A Linux partition's kernel, initramfs (empty without `initrd`) and command line
/// (`linux::command_line`: as configured, or the default, with the host's TSC rate);
/// `Ok(None)` for other partitions.
pub fn linux_for(
    platform: &Platform,
    spec: &PartitionSpec<'_>,
) -> Result<Option<super::linux::LinuxSource>, String> {
    let GuestImage::Linux(kernel) = spec.image else { return Ok(None) };
    let kernel = module_named(platform, spec, kernel)?;
    let initrd = match spec.initrd {
        Some(name) => module_named(platform, spec, name)?,
        None => &[],
    };
    let cmdline = super::linux::command_line(spec.cmdline, crate::console::tsc_hz());
    Ok(Some(super::linux::LinuxSource { kernel, initrd, cmdline }))
}

/// The Linux-specific checks: enough memory, and an image the loader accepts for it.
fn validate_linux(platform: &Platform, p: &PartitionSpec<'_>, problems: &mut Vec<String>) {
    if !matches!(p.image, GuestImage::Linux(_)) {
        return;
    }
    if p.memory < super::linux::MIN_MEMORY {
        problems.push(format!(
            "partition `{}`: a Linux guest needs at least {} MiB, it has {} MiB",
            p.name,
            super::linux::MIN_MEMORY >> 20,
            p.memory >> 20
        ));
    }
    match linux_for(platform, p) {
        Ok(Some(modules)) => {
            if let Err(e) = super::linux::check(&modules.image(), p.memory) {
                problems.push(format!("partition `{}`: Linux image refused: {e}", p.name));
            }
        }
        Ok(None) => {}
        Err(e) => problems.push(e),
    }
}

/// Checks a parsed configuration against the machine. Every problem is reported, not
/// only the first; `Err` carries them all, one per line.
pub fn validate(cfg: &PartitionConfig<'_>, platform: &Platform) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Err(e) = super::backend::enable() {
        problems
            .push(format!("partitions need AMD SVM with nested paging or Intel VMX with EPT: {e}"));
    }
    let mut total = 0u64;
    for p in cfg.partitions() {
        total += p.memory;
        if let Err(e) = image_for(platform, p) {
            problems.push(e);
        } else {
            validate_linux(platform, p, &mut problems);
        }
        for d in p.devices() {
            let b = bdf(d);
            let found = platform.pci.iter().find(|f| f.bdf == b);
            if found.is_none() {
                problems.push(format!(
                    "partition `{}`: device {b} does not exist on this machine",
                    p.name
                ));
            } else if let Some(f) = found.filter(|f| {
                p.image == GuestImage::Builtin && (f.vendor, f.device) != crate::edu::PCI_ID
            }) {
                problems.push(format!(
                    "partition `{}`: device {b} is {:04x}:{:04x} ({}), but the built-in guest drives only QEMU's edu device (1234:11e8): give the partition its own guest (`image module:NAME`)",
                    p.name,
                    f.vendor,
                    f.device,
                    iommu::assign::class_name(f.class.0, f.class.1),
                ));
            } else if !behind_iommu(platform, b) {
                problems.push(format!(
                    "partition `{}`: device {b} sits behind no IOMMU, so its DMA could not be confined",
                    p.name
                ));
            } else if let Some(route) = platform.iommu.route(b) {
                if let Err(why) = platform.iommu.interrupt_isolation(route.unit) {
                    problems.push(format!("partition `{}`: device {b}: {why}", p.name));
                }
            }
            for r in platform.iommu.reserved_for(b) {
                problems.push(format!(
                    "partition `{}`: device {b} uses firmware-reserved memory {:#x}-{:#x} ({}), \
                     which its DMA would need inside the partition: it cannot be assigned",
                    p.name, r.range.start, r.range.end, r.source
                ));
            }
        }
    }
    problems.extend(super::isolation::check(cfg, &platform.iommu));
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

/// Gives a new partition its configured devices, each in turn: its requester id
/// attached to the partition's IOMMU domain (the whole guest RAM mapped guest-physical
/// -> host-physical through the partition's DMA tracker), BAR0 passed through, and
/// only then DMA allowed for the guest.
fn attach_devices(
    p: &mut Partition,
    spec: &PartitionSpec<'_>,
    platform: &mut Platform,
) -> Result<(), String> {
    for d in spec.devices() {
        let b = bdf(d);
        let f = platform.pci.iter().find(|f| f.bdf == b).ok_or(format!("{b} vanished"))?;
        let route = platform.iommu.route(b).ok_or(format!("{b} sits behind no IOMMU"))?;
        let id = p.attach_device(&mut platform.iommu, f, route).map_err(|e| format!("{b}: {e}"))?;
        let rids = platform.iommu.dma_ids(b);
        let rids: Vec<String> = rids.iter().map(|r| format!("{r:#06x}")).collect();
        log::info!(
            "partition {}: {b} attached to IOMMU domain {id} (unit {}, requester id {}), guest RAM mapped through the DMA tracker (fgsp {}), BAR0 passed through, DMA allowed",
            p.name,
            route.unit,
            rids.join(" and "),
            p.dma().is_some_and(|d| d.fgsp()),
        );
    }
    Ok(())
}

/// Destroys every partition in `list`, detaching their devices from the IOMMU, and
/// logs what each destroy cost.
pub fn destroy_all(list: Vec<Partition>, platform: &mut Platform) {
    for p in list {
        let name = p.name.clone();
        let backing = p.memory().map_or(String::new(), |m| format!("{}", m.backing()));
        match p.destroy_in(&mut platform.iommu) {
            Ok(r) => super::story::log_destroy(&name, &backing, &r, ""),
            Err(e) => log::error!("partition {name}: destroy failed: {e}"),
        }
    }
}

/// Parses, validates and creates every partition of `text` (all or none).
pub fn create_all(text: &str, platform: &mut Platform) -> Result<Vec<Partition>, String> {
    let cfg = partition_config::parse(text).map_err(|e| format!("{e}"))?;
    validate(&cfg, platform)?;
    let mut made = Vec::new();
    for spec in cfg.partitions() {
        let created = match linux_for(platform, spec)? {
            Some(source) => Partition::create_linux(spec, source),
            None => Partition::create(spec, image_for(platform, spec)?),
        };
        let created = created.map_err(|e| format!("{e}")).map(|mut p| {
            p.accept_unreset = spec.accept_unreset;
            p
        });
        let attached = created.and_then(|mut p| match attach_devices(&mut p, spec, platform) {
            Ok(()) => Ok(p),
            Err(e) => {
                made.push(p);
                Err(e)
            }
        });
        match attached {
            Ok(p) => made.push(p),
            Err(e) => {
                // Nothing stays half-configured: the others go, devices detached first.
                destroy_all(made, platform);
                return Err(format!("partition `{}`: {e}", spec.name));
            }
        }
    }
    Ok(made)
}

/// The boot's partition story: load the configuration, create every partition (devices
/// attached through the IOMMU), then [`super::story::tell`]: run each guest, prove its
/// DMA stays inside its memory, destroy one while another runs, re-create it, destroy
/// all, and say what happened.
pub fn run_configured(platform: &mut Platform) -> Result<(), String> {
    let (text, source) = find_config(platform.boot)?;
    log::info!("partitions: configuration from the {source}");
    let partitions = create_all(text, platform)?;
    for p in &partitions {
        let m = p.memory().map_or(0, |m| m.size());
        let (small, large) = p.nested_tables().map_or((0, 0), |t| t.leaves);
        log::info!(
            "partition {}: created, {} MiB {}-backed, nested leaves {small} x 4K + {large} x 2M, {} vCPU{}",
            p.name,
            m >> 20,
            p.memory().map_or(boot::partition_config::Backing::Pages4K, |m| m.backing()),
            p.backend_name(),
            if p.platform.is_some() { ", PC platform (PIC, PIT, local APIC)" } else { "" },
        );
    }
    let failures = super::story::tell(platform, partitions);
    // Idle: every partition is gone, nothing waits for the CPU. The memory destroys
    // handed back dirty is zeroed now, off their path (allocation zeroed what was reused).
    let (zeroed, cycles) = frames::scrub_idle();
    log::info!(
        "memory: {zeroed} frames left dirty by destroys scrubbed at idle ({cycles} TSC cycles, non-temporal stores)"
    );
    let failures = failures?;
    if failures.is_empty() {
        log::info!("partitions: the device-assignment story held");
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}
