//! The device-assignment story, told once for the boot demo and the QEMU suite: every
//! partition's guest DMA lands in its own memory and nowhere else (beyond its memory,
//! the other partition, the hypervisor), then one partition is destroyed while another
//! keeps running and doing DMA, its device is shown to reach nothing, and it is
//! re-created in the same (scrubbed) memory.

use super::isolation::run_serviced;
use super::memory::GuestMemory;
use super::{cycles, Budget, Partition, Stop};
use crate::iommu::{service_faults, Units};
use crate::mem::frames;
use crate::pci::Bdf;
use crate::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use guest::{check, dma_pattern, scenario, DMA_LEN, DMA_ROUNDS, DMA_SOURCE, DMA_TARGET};

/// The byte the hypervisor's sentinel frame holds.
const SENTINEL: u8 = 0xC3;
/// The byte the destroyed partition's old DMA target is filled with before its device
/// is told to write there.
const STALE: u8 = 0xA5;

/// What went wrong, one line each (empty: the story held).
pub type Failures = Vec<String>;

fn host_bytes(addr: u64, len: u64) -> Vec<u8> {
    // SAFETY: callers pass host RAM the hypervisor owns (a partition's frame or the
    // sentinel frame), identity-mapped; reading it has no side effects.
    (0..len).map(|i| unsafe { core::ptr::read_volatile((addr + i) as *const u8) }).collect()
}

/// DMA faults recorded (VT-d fault records, AMD-Vi IO_PAGE_FAULT events) for `rid`.
/// Each is logged here in full: the service's own lines are rate-limited.
fn faults_from(platform: &mut Platform, rids: &[u16]) -> u64 {
    let mut n = 0;
    service_faults(&mut platform.iommu, |e| {
        if rids.contains(&e.source_id) {
            n += 1;
            log::info!(
                "story: DMA fault from requester {:#06x} at {:#x} ({}): reason {:#x}",
                e.source_id,
                e.address,
                if e.write { "write" } else { "read" },
                e.reason
            );
        }
    });
    n
}

fn rids(platform: &Platform, devices: &[Bdf]) -> Vec<u16> {
    devices.iter().filter_map(|b| platform.iommu.route(*b)).map(|r| r.requester_id).collect()
}

fn is_vtd(platform: &Platform) -> bool {
    matches!(platform.iommu.units, Units::Vtd(_))
}

/// Runs one guest (normal program) and checks what its DMA did, from both sides.
fn run_and_check(
    platform: &mut Platform,
    p: &mut Partition,
    sentinel: u64,
    fail: &mut Failures,
) -> Result<(), String> {
    let foreign_before =
        (p.isolation.foreign != 0).then(|| host_bytes(p.isolation.foreign, DMA_LEN));
    let ids = rids(platform, &p.devices);
    faults_from(platform, &ids);
    // QEMU's VT-d collapses a device's faults while one is pending: service the fault
    // records after every hypercall so each forbidden DMA leaves its own.
    let mut faults = 0;
    let iommu = &mut platform.iommu;
    let r = p
        .run_with(Budget::DEFAULT, &mut || {
            service_faults(iommu, |e| faults += u64::from(ids.contains(&e.source_id)));
        })
        .map_err(|e| format!("partition {}: {e}", p.name))?;
    log::info!(
        "partition {}: stopped: {:?} after {} exits, {} hypercalls, {} ticks",
        p.name,
        r.stop,
        r.exits,
        r.hypercalls,
        r.ticks
    );
    for (c, v) in &p.reports {
        log::info!("partition {}: guest reports {} = {v:#x}", p.name, guest::check_name(*c));
    }
    if r.stop != Stop::Done(0) {
        fail.push(format!("partition {}: guest ended with {:?}", p.name, r.stop));
    }
    if !p.device.is_some_and(|d| d.dma_allowed) {
        return Ok(());
    }
    let mem = p.memory().ok_or("no memory")?;
    let host = mem.host_address(DMA_TARGET).ok_or("DMA target not guest RAM")?;
    let landed = host_bytes(host, DMA_LEN)
        .iter()
        .enumerate()
        .filter(|&(i, b)| *b == dma_pattern(0, i as u64))
        .count();
    log::info!(
        "partition {}: its DMA landed at guest-physical {DMA_TARGET:#x} = host {host:#x}: {landed} of {DMA_LEN} bytes",
        p.name
    );
    if landed as u64 != DMA_LEN {
        fail.push(format!("partition {}: {landed} bytes of its DMA at host {host:#x}", p.name));
    }
    let mut tried = Vec::new();
    if let Some(before) = foreign_before {
        tried.push(("the other partition", p.isolation.foreign, before));
    }
    if p.isolation.hypervisor != 0 {
        tried.push(("hypervisor memory", sentinel, alloc::vec![SENTINEL; DMA_LEN as usize]));
    }
    for (what, addr, before) in tried {
        let changed = host_bytes(addr, DMA_LEN).iter().zip(&before).filter(|(a, b)| a != b).count();
        log::info!(
            "partition {}: DMA write to {what} (host {addr:#x}): {changed} bytes changed",
            p.name
        );
        if changed != 0 {
            fail.push(format!("partition {}: DMA changed {changed} bytes of {what}", p.name));
        }
    }
    for c in [check::DMA_OUTSIDE_NONZERO, check::DMA_FOREIGN_NONZERO, check::DMA_HYPERVISOR_NONZERO]
    {
        if let Some(v) = p.reported(c).filter(|v| *v != 0) {
            fail.push(format!("partition {}: {} = {v}", p.name, guest::check_name(c)));
        }
    }
    faults += faults_from(platform, &ids);
    let tried = [p.isolation.foreign, p.isolation.hypervisor].iter().filter(|a| **a != 0).count();
    // Each of them written and read, and the read beyond guest memory.
    let forbidden = tried as u64 * 2 + 1;
    log::info!(
        "partition {}: {faults} DMA faults recorded for its device during the run ({forbidden} forbidden DMAs tried)",
        p.name
    );
    if is_vtd(platform) && faults < forbidden {
        fail.push(format!(
            "partition {}: VT-d recorded {faults} faults for {forbidden} forbidden DMAs",
            p.name
        ));
    }
    Ok(())
}

/// Logs a destroy's costs in one greppable line.
pub fn log_destroy(name: &str, backing: &str, r: &super::TeardownReport, while_running: &str) {
    let dma = r.dma.unwrap_or_default();
    log::info!(
        "partition {name}: destroyed{while_running}: {} MiB {backing}-backed, {} invalidations issued, {} unmap calls, {} cycles ({} returning memory, scrubbing it when kept), fgsp {}, drain timeouts {}",
        r.bytes >> 20,
        dma.invalidations,
        dma.tracker.unmap_calls,
        r.cycles,
        r.scrub_cycles,
        dma.fgsp,
        dma.drain_timeouts
    );
}

/// The hypervisor has `bdf`'s edu read guest-physical [`DMA_SOURCE`] (filled with 0x11)
/// and write it to [`DMA_TARGET`] (filled with [`STALE`]), bus mastering on for the
/// duration; returns the target bytes that changed (host side) and the faults recorded.
fn hypervisor_dma(
    platform: &mut Platform,
    bdf: Bdf,
    rids: &[u16],
    source: u64,
    target: u64,
) -> Result<(usize, u64), String> {
    faults_from(platform, rids);
    // SAFETY: `source` and `target` are host frames of the partition's memory (owned by
    // the caller, the partition not running), identity-mapped, DMA_LEN fits one page.
    unsafe {
        core::ptr::write_bytes(source as *mut u8, 0x11, DMA_LEN as usize);
        core::ptr::write_bytes(target as *mut u8, STALE, DMA_LEN as usize);
    }
    let index = platform.edus.iter().position(|e| e.bdf == bdf).ok_or("device is no edu")?;
    platform.edus[index].set_bus_master(true);
    let read = platform.edus[index].read_from_memory(DMA_SOURCE, 0, DMA_LEN as usize);
    // Serviced between the two so QEMU's VT-d records each fault separately.
    let mut faults = faults_from(platform, rids);
    let write = platform.edus[index].write_to_memory(DMA_TARGET, 0, DMA_LEN as usize);
    platform.edus[index].set_bus_master(false);
    read.and(write).map_err(|e| format!("{e}"))?;
    faults += faults_from(platform, rids);
    let changed = host_bytes(target, DMA_LEN).iter().filter(|b| **b != STALE).count();
    Ok((changed, faults))
}

/// The host frames behind the guest's DMA source and target pages.
fn dma_pages(mem: &GuestMemory) -> Result<(u64, u64), String> {
    let s = mem.host_address(DMA_SOURCE).ok_or("no DMA source page")?;
    let t = mem.host_address(DMA_TARGET).ok_or("no DMA target page")?;
    Ok((s, t))
}

/// Control for [`device_reaches_nothing`]: while still attached, the same
/// hypervisor-driven DMA moves every byte (so a zero afterwards means something).
fn device_reaches_memory(
    platform: &mut Platform,
    p: &Partition,
    fail: &mut Failures,
) -> Result<(), String> {
    let Some(&bdf) = p.devices.first() else { return Ok(()) };
    let (source, target) = dma_pages(p.memory().ok_or("no memory")?)?;
    let ids = rids(platform, &p.devices);
    let (changed, _) = hypervisor_dma(platform, bdf, &ids, source, target)?;
    log::info!(
        "partition {}: control: while attached, edu DMA from its device to guest-physical {DMA_TARGET:#x} changed {changed} bytes",
        p.name
    );
    if changed as u64 != DMA_LEN {
        fail.push(format!("control: attached {}'s device moved {changed} bytes", p.name));
    }
    Ok(())
}

/// After `name` was destroyed: its device, with bus mastering turned back on, tries
/// to read and write its old guest-physical addresses; nothing may move.
fn device_reaches_nothing(
    platform: &mut Platform,
    name: &str,
    devices: &[Bdf],
    mem: &mut GuestMemory,
    fail: &mut Failures,
) -> Result<(), String> {
    let Some(&bdf) = devices.first() else { return Ok(()) };
    let ids = rids(platform, devices);
    let (source, target) = dma_pages(mem)?;
    let (changed, faults) = hypervisor_dma(platform, bdf, &ids, source, target)?;
    log::info!(
        "partition {name}: after destroy its device {bdf} reaches nothing: edu DMA to its old guest-physical {DMA_TARGET:#x} changed {changed} bytes, {faults} faults recorded"
    );
    if changed != 0 {
        fail.push(format!("destroyed {name}'s device still wrote {changed} bytes"));
    }
    if is_vtd(platform) && faults < 2 {
        fail.push(format!("destroyed {name}'s device: {faults} VT-d faults for 2 DMAs"));
    }
    // What the check itself wrote is not the old partition's data: scrub it again.
    mem.scrub();
    Ok(())
}

/// Tells the story with `parts` (created by `create_all`, devices attached). Returns
/// the failures; `Err` only when the story could not be told at all. Every partition
/// is destroyed at the end.
pub fn tell(platform: &mut Platform, parts: Vec<Partition>) -> Result<Failures, String> {
    let mut fail = Failures::new();
    // Linux guests run on their own (`linux::run`); the story is the other guests'.
    let (linux, mut parts): (Vec<Partition>, Vec<Partition>) =
        parts.into_iter().partition(|p| p.is_linux());
    for p in linux {
        match super::linux::run_and_recreate(platform, p) {
            Ok((again, failure)) => {
                fail.extend(failure);
                super::config::destroy_all(alloc::vec![again], platform);
            }
            Err(e) => fail.push(e),
        }
    }
    let sentinel = frames::alloc().ok_or("no frame for the hypervisor sentinel")?;
    // SAFETY: a frame just taken from the allocator, identity-mapped, owned here.
    unsafe { core::ptr::write_bytes(sentinel as *mut u8, SENTINEL, 4096) };
    let n = parts.len();
    let hosts: Vec<Option<u64>> = parts
        .iter()
        .map(|p| p.memory().and_then(|m| m.host_address(guest::LOAD_ADDRESS)))
        .collect();
    for (i, p) in parts.iter_mut().enumerate() {
        if !p.builtin_image {
            log::info!(
                "partition {}: runs its own image, so it is told no host-physical address (no isolation probes)",
                p.name
            );
            continue;
        }
        let own = p.memory().map_or(0, |m| m.size());
        let other = if n > 1 { hosts[(i + 1) % n] } else { None };
        // A foreign host address inside this guest's own IOVA range would be its own RAM.
        p.isolation.foreign = other.filter(|&h| h >= own).unwrap_or(0);
        p.isolation.hypervisor = sentinel;
    }
    let result = tell_inner(platform, &mut parts, sentinel, &mut fail);
    super::config::destroy_all(core::mem::take(&mut parts), platform);
    frames::free(sentinel);
    result.map(|()| fail)
}

fn tell_inner(
    platform: &mut Platform,
    parts: &mut Vec<Partition>,
    sentinel: u64,
    fail: &mut Failures,
) -> Result<(), String> {
    for p in parts.iter_mut() {
        run_and_check(platform, p, sentinel, fail)?;
    }
    let with_dma = parts.iter().filter(|p| p.dma().is_some()).count();
    if with_dma < 2 {
        log::info!("partitions: fewer than two partitions with devices: no teardown story");
        return Ok(());
    }
    // Teardown while another partition runs: B loops over DMA rounds, A goes.
    let a = parts.remove(0);
    device_reaches_memory(platform, &a, fail)?;
    let b = &mut parts[0];
    b.restart(scenario::DMA_ROUNDS).map_err(|e| format!("{e}"))?;
    // Paused once its first round is reported (in steps of a few ticks, at most 400): a
    // fixed budget let a fast machine finish every round before A's destroy.
    let done_rounds =
        |p: &Partition| p.reports.iter().filter(|(c, _)| *c == check::DMA_ROUND).count();
    let step = Budget { ticks: 5, exits: 1_000_000 };
    let mut first = run_serviced(b, step, &mut platform.iommu).map_err(|e| format!("{e}"))?;
    let mut ticks = first.ticks;
    for _ in 0..400 {
        if first.stop != Stop::BudgetExhausted || done_rounds(b) > 0 {
            break;
        }
        first = run_serviced(b, step, &mut platform.iommu).map_err(|e| format!("{e}"))?;
        ticks += first.ticks;
    }
    let rounds_before = done_rounds(b);
    log::info!(
        "partition {}: running DMA rounds, paused after {ticks} ticks ({:?}) with {rounds_before} rounds done",
        b.name,
        first.stop
    );
    let (name, devices) = (a.name.clone(), a.devices.clone());
    let with_platform = a.platform.is_some();
    let backing = a.memory().map(|m| m.backing());
    let backing = backing.map_or(String::new(), |b| format!("{b}"));
    let (mut mem, report) = a
        .destroy_keeping_memory_in(&mut platform.iommu)
        .map_err(|e| format!("destroy {name}: {e}"))?;
    log_destroy(&name, &backing, &report, &format!(" while {} runs", parts[0].name));
    let b = &mut parts[0];
    let rest = if b.state() == super::State::Stopped {
        first
    } else {
        run_serviced(b, Budget::DEFAULT, &mut platform.iommu).map_err(|e| format!("{e}"))?
    };
    let rounds: Vec<u64> =
        b.reports.iter().filter(|(c, _)| *c == check::DMA_ROUND).map(|(_, v)| *v).collect();
    let good = rounds.iter().filter(|v| *v & 0xffff_ffff == DMA_LEN).count();
    log::info!(
        "partition {}: kept running: {:?}, {good} of {DMA_ROUNDS} DMA rounds matched ({rounds_before} before {name}'s destroy)",
        b.name,
        rest.stop
    );
    if rest.stop != Stop::Done(0) || good as u64 != DMA_ROUNDS || rounds_before as u64 >= DMA_ROUNDS
    {
        fail.push(format!(
            "{} while {name} was destroyed: {:?}, rounds {rounds:x?} ({rounds_before} before)",
            b.name, rest.stop
        ));
    }
    device_reaches_nothing(platform, &name, &devices, &mut mem, fail)?;
    // Re-create A in the same frames: its guest must find them scrubbed.
    let t0 = cycles();
    let mut again = Partition::create_in(&name, mem, super::BUILTIN_GUEST)
        .map_err(|e| format!("re-create {name}: {e}"))?;
    if with_platform {
        again.enable_platform().map_err(|e| format!("re-create {name}: {e}"))?;
    }
    for d in &devices {
        let f = platform.pci.iter().find(|f| f.bdf == *d).ok_or("device vanished")?;
        let route = platform.iommu.route(*d).ok_or("no route")?;
        again.attach_device(&mut platform.iommu, f, route).map_err(|e| format!("{e}"))?;
    }
    log::info!("partition {name}: re-created in the same memory ({} cycles)", cycles() - t0);
    run_and_check(platform, &mut again, sentinel, fail)?;
    let nonzero = again.reported(check::NONZERO_WORDS);
    log::info!(
        "partition {name}: re-created guest found {nonzero:?} nonzero words: the old data was scrubbed"
    );
    if nonzero != Some(0) {
        fail.push(format!("re-created {name} found {nonzero:?} nonzero words"));
    }
    parts.push(again);
    Ok(())
}
