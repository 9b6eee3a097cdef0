//! Destroy without waiting for the scrub: a destroyed partition's frames go back dirty,
//! and no later owner ever sees the old data (every allocation path zeroes dirty frames,
//! the background scrub too). And the benchmark of destroy latency against the time until
//! the memory is reusable (clean).

use crate::ensure;
use crate::mem::frames;
use crate::partition::config::create_all;
use crate::partition::{cycles, Budget, Partition, Stop, BUILTIN_GUEST};
use crate::testing::{TestContext, TestResult};
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use boot::partition_config::{Backing, PartitionSpec};
use guest::check;

const MIB: u64 = 1 << 20;
const PATTERN: u64 = 0xA5A5_5A5A_DEAD_BEEF;

fn create(name: &str, memory: u64, backing: Backing) -> Result<Partition, String> {
    Partition::create(&PartitionSpec::new(name, memory, backing), BUILTIN_GUEST)
        .map_err(|e| format!("create {name}: {e}"))
}

/// Every 4 KiB frame of `p`'s memory, each filled with [`PATTERN`] by the host.
fn fill_and_list(p: &Partition) -> Result<Vec<u64>, String> {
    let mem = p.memory().ok_or("no memory")?;
    let page = mem.backing().page_size();
    let mut out = Vec::new();
    for &c in mem.chunks() {
        for f in (c..c + page).step_by(4096) {
            for o in (0..4096).step_by(8) {
                // SAFETY: a frame of the partition's memory (stopped guest), identity-mapped.
                unsafe { core::ptr::write_volatile((f + o) as *mut u64, PATTERN) };
            }
            out.push(f);
        }
    }
    Ok(out)
}

/// Words of `frame` that still hold anything.
fn nonzero_words(frame: u64) -> usize {
    (0..4096)
        .step_by(8)
        // SAFETY: reading a frame of RAM (identity-mapped) has no side effects; the frame
        // is free or owned by this test, and nothing else runs.
        .filter(|o| unsafe { core::ptr::read_volatile((frame + o) as *const u64) } != 0)
        .count()
}

/// Takes frames from the allocator (`count` at a time, `count`-aligned) until every frame
/// of `wanted` was handed out or memory runs out; each wanted frame must come back with
/// no word of old data. Everything taken goes back (clean) afterwards.
fn allocate_until_reused(wanted: &[u64], count: u64) -> Result<usize, String> {
    let mut left: BTreeSet<u64> = wanted.iter().copied().collect();
    let mut taken = Vec::new();
    let mut seen_dirty = 0;
    let mut result = Ok(());
    while !left.is_empty() {
        let got = if count == 1 {
            frames::alloc()
        } else {
            frames::alloc_contiguous(count, count * 4096)
        };
        let Some(run) = got else { break };
        taken.push(run);
        for f in (run..run + count * 4096).step_by(4096) {
            if left.remove(&f) {
                seen_dirty += 1;
                let n = nonzero_words(f);
                if n != 0 && result.is_ok() {
                    result = Err(format!("frame {f:#x} handed out with {n} words of old data"));
                }
            }
        }
    }
    for run in taken {
        frames::free_contiguous(run, count);
    }
    result?;
    ensure!(left.is_empty(), "{} frames of the destroyed partition never came back", left.len());
    Ok(seen_dirty)
}

/// For 4K- and 2M-backed partitions: destroy returns with the memory still dirty (the
/// control: the old data is really there, so the checks below can fail), every frame is
/// zeroed when an allocation (single frames and 2 MiB runs) hands it out again, the
/// background scrub cleans the rest, and a new guest finds no nonzero word.
pub fn destroy_defers_scrub(_: &mut TestContext<'_>) -> TestResult {
    crate::partition::backend::enable().map_err(|e| format!("{e}"))?;
    let free = frames::free_frames();
    for (backing, count) in [(Backing::Pages4K, 1u64), (Backing::Pages2M, 512)] {
        let mut p = create("dirty", 8 * MIB, backing)?;
        let stop = p.run(Budget::DEFAULT).map_err(|e| format!("{e}"))?.stop;
        ensure!(stop == Stop::Done(0), "{backing}: guest ended with {stop:?}");
        let list = fill_and_list(&p)?;
        let dirty_before = frames::dirty_frames();
        let bytes = p.destroy();
        ensure!(bytes == 8 * MIB, "{backing}: destroy returned {bytes} bytes");
        // Control: the destroy did not scrub; the frames are free, dirty, still full.
        let dirty = list.iter().filter(|&&f| frames::is_dirty(f)).count();
        let full = list.iter().filter(|&&f| nonzero_words(f) == 512).count();
        ensure!(dirty == list.len(), "{backing}: {dirty} of {} frames marked dirty", list.len());
        ensure!(full == list.len(), "{backing}: control: only {full} frames kept the old data");
        ensure!(frames::dirty_frames() >= dirty_before + list.len() as u64, "dirty count");
        let reused = allocate_until_reused(&list, count)?;
        ensure!(reused == list.len(), "{backing}: {reused} of {} frames reused", list.len());
        log::info!("{backing}: {} dirty frames handed out again, each zeroed first", reused);
    }
    // A partition re-created at once on memory just released dirty (the allocator's
    // search put back at those frames) sees zeros. The control puts one word of old data
    // back into its memory before it runs: reported, so a skipped zeroing would be seen.
    for control in [false, true] {
        let p = create("released", 8 * MIB, Backing::Pages4K)?;
        let list = fill_and_list(&p)?;
        p.destroy();
        frames::search_from(list.iter().copied().min().unwrap_or(0));
        let mut q = create("reborn", 8 * MIB, Backing::Pages4K)?;
        let old: BTreeSet<u64> = list.iter().copied().collect();
        let mem = q.memory().ok_or("no memory")?;
        let reused = mem.chunks().iter().filter(|c| old.contains(c)).count();
        ensure!(reused * 2 > list.len(), "only {reused} of {} released frames reused", list.len());
        if control {
            let last = mem.host_address(mem.size() - 8).ok_or("no last word")?;
            // SAFETY: the last word of the new partition's memory (not yet run), mapped.
            unsafe { core::ptr::write_volatile(last as *mut u64, PATTERN) };
        }
        let stop = q.run(Budget::DEFAULT).map_err(|e| format!("{e}"))?.stop;
        // The guest fails its own run when it finds old data (the control's does).
        ensure!(
            matches!(stop, Stop::Done(s) if (s != 0) == control),
            "re-created guest (control {control}) ended with {stop:?}"
        );
        let seen = q.reported(check::NONZERO_WORDS);
        let want = Some(u64::from(control));
        ensure!(seen == want, "control {control}: guest saw {seen:?} nonzero words, want {want:?}");
        log::info!("re-created on {reused} just-released frames: nonzero words {seen:?} (control {control})");
        q.destroy();
    }
    // The background scrub: a destroyed partition's frames zeroed with no allocation.
    let p = create("scrubbed", 8 * MIB, Backing::Pages4K)?;
    let list = fill_and_list(&p)?;
    p.destroy();
    ensure!(frames::dirty_frames() > 0, "nothing dirty after a destroy");
    let zeroed = frames::scrub_dirty(u64::MAX);
    ensure!(frames::dirty_frames() == 0, "{} frames still dirty", frames::dirty_frames());
    ensure!(zeroed >= list.len() as u64, "scrubbed {zeroed} frames");
    let left: usize = list.iter().map(|&f| nonzero_words(f)).sum();
    ensure!(left == 0, "{left} words survived the background scrub");
    // And a new guest sees nothing of the old ones.
    let mut q = create("after", 8 * MIB, Backing::Pages4K)?;
    let stop = q.run(Budget::DEFAULT).map_err(|e| format!("{e}"))?.stop;
    ensure!(stop == Stop::Done(0), "new guest ended with {stop:?}");
    ensure!(q.reported(check::NONZERO_WORDS) == Some(0), "new guest saw old data");
    q.destroy();
    frames::scrub_dirty(u64::MAX);
    let now = frames::free_frames();
    ensure!(now == free, "{} frames leaked", free as i64 - now as i64);
    Ok(())
}

/// 1 GiB partitions, 4K- and 2M-backed, with edu 0 assigned through the IOMMU: the
/// destroy latency (devices quiesced and blocked, mappings torn down and invalidated,
/// memory back dirty), the time until the memory is reusable (background scrub done),
/// and, for comparison, a destroy that scrubs synchronously (as before). One
/// `bench partition_destroy ...` line per backing (QEMU -m 3G).
pub fn bench(ctx: &mut TestContext<'_>) -> TestResult {
    let platform = &mut *ctx.platform;
    ensure!(!platform.edus.is_empty(), "needs an edu device");
    crate::partition::backend::enable().map_err(|e| format!("{e}"))?;
    let edu = platform.edus[0].bdf;
    for backing in ["4k", "2m"] {
        let cfg = format!("partition big\n memory 1G\n backing {backing}\n device {edu}\n");
        // Destroy that scrubs synchronously (memory kept for re-creation, then dropped).
        let mut parts = create_all(&cfg, platform)?;
        let p = parts.pop().ok_or("no partition")?;
        let (mem, sync) = p.destroy_keeping_memory_in(&mut platform.iommu)?;
        drop(mem);
        frames::scrub_dirty(u64::MAX);
        // Destroy with the scrub off its path.
        let mut parts = create_all(&cfg, platform)?;
        let p = parts.pop().ok_or("no partition")?;
        let t0 = cycles();
        let report = p.destroy_in(&mut platform.iommu)?;
        let destroyed = cycles() - t0;
        let dirty = frames::dirty_frames();
        frames::scrub_dirty(u64::MAX);
        let reusable = cycles() - t0;
        for e in &platform.edus {
            e.set_bus_master(true);
        }
        crate::println!(
            "bench partition_destroy backing={backing} bytes={} destroy_cycles={destroyed} reusable_cycles={reusable} dirty_frames={dirty} sync_scrub_destroy_cycles={} invalidations={}",
            report.bytes,
            sync.cycles,
            report.dma.map_or(0, |d| d.invalidations)
        );
    }
    Ok(())
}
