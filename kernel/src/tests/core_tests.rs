//! Tests of the kernel core: boot information, memory, ACPI and PCI discovery.

use crate::ensure;
use crate::testing::{TestContext, TestResult};
use alloc::vec::Vec;

pub fn boot_info(ctx: &mut TestContext<'_>) -> TestResult {
    let info = ctx.platform.boot;
    ensure!(!info.memory_map().is_empty(), "empty memory map");
    ensure!(info.usable_bytes() >= 64 << 20, "only {} bytes usable", info.usable_bytes());
    let (start, end) = boot::entry::kernel_image();
    let covered = info
        .memory_map()
        .iter()
        .any(|r| r.kind == boot::MemoryKind::Usable && r.start <= start && end <= r.end());
    ensure!(covered, "kernel image {start:#x}-{end:#x} is not inside usable RAM");
    Ok(())
}

pub fn frames(_ctx: &mut TestContext<'_>) -> TestResult {
    use crate::mem::frames;
    let before = frames::free_frames();
    let a: Vec<u64> = (0..64).filter_map(|_| frames::alloc_zeroed()).collect();
    ensure!(a.len() == 64, "allocated only {} of 64 frames", a.len());
    let mut sorted = a.clone();
    sorted.sort_unstable();
    sorted.dedup();
    ensure!(sorted.len() == 64, "a frame was handed out twice");
    let (img_start, img_end) = boot::entry::kernel_image();
    for &f in &a {
        ensure!(f % 4096 == 0, "frame {f:#x} is not page aligned");
        ensure!(f >= 0x10_0000, "frame {f:#x} is below 1 MiB");
        ensure!(f + 4096 <= img_start || f >= img_end, "frame {f:#x} is inside the kernel image");
        // SAFETY: the frame was just allocated to this test and is identity-mapped.
        let first = unsafe { core::ptr::read_volatile(f as *const u64) };
        ensure!(first == 0, "frame {f:#x} was not zeroed");
    }
    ensure!(frames::free_frames() == before - 64, "free count did not drop by 64");
    let run = frames::alloc_contiguous(512, 2 << 20).ok_or("no 2 MiB run")?;
    ensure!(run % (2 << 20) == 0, "2 MiB run at {run:#x} is misaligned");
    frames::free_contiguous(run, 512);
    for f in a {
        frames::free(f);
    }
    ensure!(frames::free_frames() == before, "frames leaked");
    Ok(())
}

pub fn heap(_ctx: &mut TestContext<'_>) -> TestResult {
    let v: Vec<u64> = (0..100_000).collect();
    ensure!(v.iter().sum::<u64>() == 4_999_950_000, "heap data corrupted");
    let s = alloc::format!("{}-{}", "heap", v.len());
    ensure!(s == "heap-100000", "formatting on the heap failed: {s}");
    Ok(())
}

pub fn acpi(ctx: &mut TestContext<'_>) -> TestResult {
    let a = &ctx.platform.acpi;
    ensure!(!a.ecam.is_empty(), "no MCFG ECAM window");
    ensure!(a.cpus >= 1, "MADT lists no processor");
    ensure!(!a.ioapics.is_empty(), "MADT lists no IOAPIC");
    Ok(())
}

pub fn pci(ctx: &mut TestContext<'_>) -> TestResult {
    let f = &ctx.platform.pci;
    // q35's host bridge is 8086:29c0 at 00:00.0 on every QEMU; on other machines any
    // function at bus 0 device 0 will do.
    let host = f.iter().find(|f| f.bdf.bus == 0 && f.bdf.device == 0);
    ensure!(host.is_some(), "no host bridge at 00:00.0 among {} functions", f.len());
    ensure!(f.iter().all(|f| f.vendor != 0xFFFF), "an absent function was listed");
    Ok(())
}

/// The local APIC's spurious vector has a gate that just returns: `int 0xff` reaches it
/// (without the gate the CPU raises #GP and the run fails).
pub fn spurious_vector(_ctx: &mut TestContext<'_>) -> TestResult {
    let before = crate::apic::ticks();
    // SAFETY: vector 0xFF's gate is an IRET-only stub; it touches no memory or registers.
    unsafe { core::arch::asm!("int 0xff") };
    ensure!(crate::apic::ticks() >= before, "tick counter went backwards");
    Ok(())
}

/// With the timer masked, a wait that never succeeds still ends (bounded by the TSC),
/// reports failure, and the timer ticks again after unmasking.
pub fn wait_without_timer(_ctx: &mut TestContext<'_>) -> TestResult {
    crate::apic::set_timer_masked(true);
    let frozen = crate::apic::ticks();
    let mut polls = 0u64;
    let ok = crate::apic::wait_until(2, || {
        polls += 1;
        false
    });
    let still = crate::apic::ticks();
    crate::apic::set_timer_masked(false);
    ensure!(!ok, "wait_until reported success for a condition that never held");
    ensure!(still == frozen, "the masked timer still ticked ({frozen} -> {still})");
    ensure!(polls > 1, "the wait polled only {polls} times");
    let resumed = crate::apic::wait_until(100, || crate::apic::ticks() > still + 1);
    ensure!(resumed, "the timer did not tick again after unmasking");
    Ok(())
}

/// A read outside an MMIO window returns all ones (so bit-clear polls time out), a read
/// inside returns the register: a 16-byte window onto the local APIC.
pub fn mmio_out_of_window(_ctx: &mut TestContext<'_>) -> TestResult {
    let msr = x86_64::registers::model_specific::Msr::new(0x1B);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 processor; reading it has no effect.
    let base = unsafe { msr.read() } & 0xF_FFFF_F000;
    let small = crate::mmio::MmioWindow::map(base, 0x10)?;
    let full = crate::mmio::MmioWindow::map(base, 0x1000)?;
    let version = full.read32(0x30);
    ensure!(version != u32::MAX, "the APIC version register reads all ones in a full window");
    ensure!(small.read32(0x30) == u32::MAX, "an out-of-window read did not return all ones");
    ensure!(small.read64(0x30) == u64::MAX, "an out-of-window 64-bit read was not all ones");
    ensure!(small.read32(0x2) == u32::MAX, "a misaligned read was not refused");
    Ok(())
}

/// Domain ids stay below the unit's domain count, skip 0, are never handed out twice
/// while live, run out with an error, and come back after `free`.
pub fn domain_ids(_ctx: &mut TestContext<'_>) -> TestResult {
    use crate::iommu::DomainIds;
    let mut ids = DomainIds::new([16, 1 << 16]);
    let mut got = Vec::new();
    for _ in 0..15 {
        got.push(ids.alloc(0)?);
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    ensure!(sorted.len() == 15, "a live id was handed out twice: {got:?}");
    ensure!(got.iter().all(|&i| (1..16).contains(&i)), "an id outside 1..16: {got:?}");
    ensure!(ids.alloc(0).is_err(), "a 16-id unit handed out a 16th id");
    ensure!(ids.live(0) == 15 && ids.live(1) == 0, "live counts {} / {}", ids.live(0), ids.live(1));
    ids.free(0, got[7]);
    let again = ids.alloc(0)?;
    ensure!(again == got[7], "after freeing {} the unit handed out {again}", got[7]);
    ensure!(ids.alloc(1)? == 1, "the second unit's id space is not its own");
    ensure!(ids.alloc(2).is_err(), "a unit that does not exist handed out an id");
    Ok(())
}
