//! Device assignment through the IOMMU in the partition lifecycle, on whichever vendor
//! the machine has: the two-partition story (DMA lands in its own memory and nowhere
//! else, destroy while another partition runs, the destroyed device reaches nothing,
//! re-creation in scrubbed memory), and the teardown benchmark for 1 GiB partitions.

use crate::ensure;
use crate::mem::frames;
use crate::partition::config::create_all;
use crate::partition::dma::PartitionDma;
use crate::partition::memory::GuestMemory;
use crate::partition::{cycles, story};
use crate::testing::{TestContext, TestResult};
use crate::Platform;
use alloc::format;
use alloc::string::String;
use boot::partition_config::Backing;
use iommu::tracker::UnmapStrategy;

/// Two partitions (2M- and 4K-backed), each with its own edu device.
const TWO: &str = "partition a\n memory 8M\n backing 2m\n device 00:04.0\n\
partition b\n memory 8M\n backing 4k\n device 00:05.0\n";

/// Teardown turns bus mastering off; the platform's own edu drivers want it back.
fn restore_bus_mastering(platform: &Platform) {
    for e in &platform.edus {
        e.set_bus_master(true);
    }
}

/// The whole story, and the frames it took given back.
pub fn story(ctx: &mut TestContext<'_>) -> TestResult {
    let platform = &mut *ctx.platform;
    ensure!(platform.edus.len() >= 2, "needs two edu devices, found {}", platform.edus.len());
    crate::partition::backend::enable().map_err(|e| format!("{e}"))?;
    let free = frames::free_frames();
    let parts = create_all(TWO, platform)?;
    let failures = story::tell(platform, parts);
    restore_bus_mastering(platform);
    let failures = failures?;
    ensure!(failures.is_empty(), "{}", failures.join("; "));
    let now = frames::free_frames();
    // Units keep the context tables / device-table pages they made on first attach.
    ensure!(now + 4 >= free, "{} frames not returned", free - now);
    log::info!("partition story: {} frames held by the units after it", free.saturating_sub(now));
    Ok(())
}

/// A device no partition owns reaches nothing: its DMA to host-physical addresses
/// (which land when there is no IOMMU: the control, on `--iommu none`) moves no byte.
pub fn unassigned_blocked(ctx: &mut TestContext<'_>) -> TestResult {
    let platform = &mut *ctx.platform;
    let has_iommu = !matches!(platform.iommu.units, crate::iommu::Units::None);
    let vtd = matches!(platform.iommu.units, crate::iommu::Units::Vtd(_));
    let bdf = platform.edus.last().ok_or("needs an edu device")?.bdf;
    let rid = platform.iommu.route(bdf).map(|r| r.requester_id);
    crate::iommu::service_faults(&mut platform.iommu, |_| {});
    let edu = platform.edus.last_mut().ok_or("needs an edu device")?;
    let (source, target) = (frames::alloc().ok_or("no frame")?, frames::alloc().ok_or("no frame")?);
    // SAFETY: two frames just taken from the allocator, identity-mapped, owned here.
    unsafe {
        core::ptr::write_bytes(source as *mut u8, 0x11, 4096);
        core::ptr::write_bytes(target as *mut u8, 0xA5, 4096);
    }
    let moved =
        edu.read_from_memory(source, 0, 2048).and_then(|()| edu.write_to_memory(target, 0, 2048));
    // SAFETY: as above; reading the frame has no side effects.
    let changed = (0..2048u64)
        .filter(|i| unsafe { core::ptr::read_volatile((target + i) as *const u8) } != 0xA5)
        .count();
    frames::free(source);
    frames::free(target);
    moved.map_err(|e| format!("edu: {e}"))?;
    let mut faults = 0;
    crate::iommu::service_faults(&mut platform.iommu, |e| {
        faults += u64::from(Some(e.source_id) == rid);
    });
    log::info!(
        "unassigned {bdf}: DMA to host-physical {target:#x} changed {changed} bytes (IOMMU: {has_iommu}), {faults} faults recorded"
    );
    ensure!(!vtd || faults > 0, "VT-d recorded no fault for the blocked device");
    if has_iommu {
        ensure!(changed == 0, "an unassigned device wrote {changed} bytes");
    } else {
        ensure!(changed == 2048, "control: without an IOMMU the DMA moved {changed} bytes");
    }
    Ok(())
}

fn strategy_name(s: UnmapStrategy) -> &'static str {
    match s {
        UnmapStrategy::PageByPage => "page-by-page",
        UnmapStrategy::SeedChunked => "seed-chunked",
        UnmapStrategy::LinuxFgsp => "linux-fgsp",
        UnmapStrategy::Linux2018 => "linux-2018",
        UnmapStrategy::Gathered => "default",
    }
}

/// Maps `mem` through a fresh tracker with `strategy`, attaches edu 0, tears down, and
/// says what the teardown cost in one line.
fn one_teardown(
    platform: &mut Platform,
    mem: &GuestMemory,
    strategy: UnmapStrategy,
) -> Result<String, String> {
    let edu = platform.edus.first().ok_or("no edu")?.bdf;
    let f = platform.pci.iter().find(|f| f.bdf == edu).ok_or("edu not enumerated")?;
    let route = platform.iommu.route(f.bdf).ok_or("edu behind no IOMMU")?;
    let mut dma = PartitionDma::new(&platform.iommu, strategy)?;
    // 4K backing: the IOMMU maps with 4 KiB pages, as for host frames that are not
    // contiguous (a fresh allocator hands out long runs, which would map as 2M pages).
    let four_k = mem.backing() == Backing::Pages4K;
    if four_k {
        dma.restrict_page_sizes(1 << 12);
    }
    let c0 = cycles();
    dma.map_memory(&mut platform.iommu, &mem.host_extents())?;
    dma.attach(&mut platform.iommu, f, route)?;
    let map_cycles = cycles() - c0;
    let mut released = 0u64;
    let t0 = cycles();
    let r = dma.teardown(&mut platform.iommu, &mut |e| released += e.len)?;
    let teardown_cycles = cycles() - t0;
    ensure!(released == mem.size(), "released {released:#x} of {:#x}", mem.size());
    Ok(format!(
        "bench partition_teardown backing={} strategy={} bytes={} extents={} iommu_pages={} fgsp={} invalidations={} unmap_calls={} flushes={} tracker_invalidations={} cycles={} map_cycles={}",
        mem.backing(),
        strategy_name(strategy),
        mem.size(),
        mem.contiguous_runs().count(),
        if four_k { "4k" } else { "largest" },
        r.fgsp,
        r.invalidations,
        r.tracker.unmap_calls,
        r.tracker.syncs,
        r.tracker.invalidations,
        teardown_cycles,
        map_cycles
    ))
}

/// 1 GiB of partition memory, 4K- and 2M-backed, mapped through a tracker and torn down
/// under each strategy: one `bench partition_teardown ...` line each (QEMU -m 3G).
pub fn bench(ctx: &mut TestContext<'_>) -> TestResult {
    let platform = &mut *ctx.platform;
    ensure!(!platform.edus.is_empty(), "needs an edu device");
    let strategies =
        [UnmapStrategy::PageByPage, UnmapStrategy::SeedChunked, UnmapStrategy::Gathered];
    for backing in [Backing::Pages4K, Backing::Pages2M] {
        let mem = GuestMemory::allocate(1 << 30, backing)
            .ok_or("no free 1 GiB for the benchmark (QEMU -m 3G or more)")?;
        for s in strategies {
            let line = one_teardown(platform, &mem, s);
            restore_bus_mastering(platform);
            crate::println!("{}", line?);
        }
    }
    Ok(())
}
