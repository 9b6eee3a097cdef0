//! The guest program on the emulated platform: it programs the PIC, the PIT and the
//! local APIC itself (ports and the trapped xAPIC page), halts with interrupts on, and
//! counts PIT and APIC timer interrupts, each EOI'd. The counts must fit the time the
//! guest waited (its own TSC); controls: the timers masked (nothing arrives), no platform
//! (the PIC is not there), an access the decoder refuses (the run stops with its error).

use crate::ensure;
use crate::partition::platform::decode::DecodeError;
use crate::partition::platform::lapic::BUS_HZ;
use crate::partition::platform::pit::PIT_HZ;
use crate::partition::{Budget, Partition, Stop, BUILTIN_GUEST};
use crate::testing::{TestContext, TestResult};
use alloc::format;
use alloc::string::String;
use boot::partition_config::{Backing, GuestPlatformKind, PartitionSpec};
use guest::{check, scenario};

fn partition(name: &str, platform: bool, scenario: u64) -> Result<Partition, String> {
    let mut spec = PartitionSpec::new(name, 4 << 20, Backing::Pages4K);
    if platform {
        spec.platform = GuestPlatformKind::Pc;
    }
    let mut p =
        Partition::create(&spec, BUILTIN_GUEST).map_err(|e| format!("create {name}: {e}"))?;
    p.scenario = scenario;
    Ok(p)
}

fn run(p: &mut Partition) -> Result<Stop, String> {
    let r = p.run(Budget::DEFAULT).map_err(|e| format!("run {}: {e}", p.name))?;
    log::info!(
        "partition {}: {:?} after {} exits, {} ticks; platform {:?}",
        p.name,
        r.stop,
        r.exits,
        r.ticks,
        p.platform.as_ref().map(|x| (x.stats, x.lapic.counts))
    );
    Ok(r.stop)
}

fn reported(p: &Partition, id: u64) -> Result<u64, String> {
    p.reported(id).ok_or(format!("the guest reported no {}", guest::check_name(id)))
}

/// Interrupts a periodic timer of `period_hz` can have raised in `cycles` of the TSC:
/// at most one per period that ended (plus the one that may end at the last HLT's
/// wake-up). At least an eighth, and two: periods that pass while the guest is not run
/// are merged into one interrupt (as on hardware), and on a shared machine QEMU itself
/// is not always run (measured on an idle machine: 20 of 19 PIT and 40 of 40 APIC
/// periods; under load as few as 15 of 40).
fn plausible(name: &str, got: u64, cycles: u64, tsc_hz: u64, period_hz: u64) -> TestResult {
    let want = u128::from(cycles) * u128::from(period_hz) / u128::from(tsc_hz);
    let want = want as u64;
    log::info!("platform: {got} {name} interrupts in {cycles} TSC cycles, {want} periods");
    ensure!(got <= want + 2, "{got} {name} interrupts, more than the {want} periods that passed");
    ensure!(got >= (want / 8).max(2), "{got} {name} interrupts in {want} periods");
    Ok(())
}

/// The timers run: PIT ticks and APIC timer interrupts in a plausible number for the
/// guest's own elapsed TSC, the APIC's current count falls, every interrupt the host
/// handed over was handled (and EOI'd, or the next could not have come).
pub fn timers(_: &mut TestContext<'_>) -> TestResult {
    timers_in(scenario::PLATFORM_TIMERS)
}

/// As [`timers`] with a guest that spins with interrupts on instead of halting: it
/// never exits by itself, and the host's timer interrupt (which ends every guest slice)
/// is what lets the platform deliver.
pub fn spinning(_: &mut TestContext<'_>) -> TestResult {
    timers_in(scenario::PLATFORM_SPIN)
}

fn timers_in(scenario: u64) -> TestResult {
    let tsc_hz = crate::console::tsc_hz();
    ensure!(tsc_hz != 0, "the TSC rate is unknown (no PIT on the host)");
    let mut p = partition("timers", true, scenario)?;
    let stop = run(&mut p)?;
    ensure!(stop == Stop::Done(0), "guest ended with {stop:?}, reports {:?}", p.reports);
    ensure!(
        reported(&p, check::PIC_IMR)? == 0xFFFE,
        "PIC masks read back {:#x}",
        reported(&p, check::PIC_IMR)?
    );
    let (first, second) = (reported(&p, check::TMCCT_FIRST)?, reported(&p, check::TMCCT_SECOND)?);
    ensure!(second < first && first <= u64::from(u32::MAX), "TMCCT {first:#x} then {second:#x}");
    let waited = reported(&p, check::WAIT_CYCLES)?;
    let pit = reported(&p, check::PIT_TICKS)?;
    let lapic = reported(&p, check::LAPIC_TICKS)?;
    plausible("PIT", pit, waited, tsc_hz, PIT_HZ / u64::from(guest::PIT_COUNT))?;
    let apic_hz = BUS_HZ / 16 / u64::from(guest::LAPIC_COUNT);
    plausible("APIC timer", lapic, waited, tsc_hz, apic_hz)?;
    ensure!(reported(&p, check::SPURIOUS)? == 0, "spurious interrupts");
    let plat = p.platform.as_ref().ok_or("no platform")?;
    // Each interrupt the guest took ran its handler once: the host's counts of vectors
    // taken are the guest's counts (the PIT's plus none other from the PIC).
    ensure!(
        plat.stats.pic_taken == pit,
        "{} PIC vectors taken, the guest counted {pit}",
        plat.stats.pic_taken
    );
    ensure!(
        plat.stats.lapic_taken == lapic,
        "{} APIC vectors taken, the guest counted {lapic}",
        plat.stats.lapic_taken
    );
    ensure!(
        plat.lapic.counts.eoi == lapic,
        "{} APIC EOIs for {lapic} interrupts",
        plat.lapic.counts.eoi
    );
    ensure!(plat.pic.isr(0) == 0, "IRQ 0 left in service: no EOI reached the PIC");
    log::info!(
        "platform: guest took {pit} PIT and {lapic} APIC timer interrupts in {} ms, TMCCT {first:#x} -> {second:#x}",
        waited * 1000 / tsc_hz
    );
    p.destroy();
    Ok(())
}

/// Control: IRQ 0 masked in the PIC and the APIC timer masked in its LVT, the guest
/// spinning with interrupts on for as long: nothing arrives. A HLT with interrupts on and
/// nothing armed is ended by the budget (resumable); one with interrupts off ends the
/// run for good.
pub fn masked(_: &mut TestContext<'_>) -> TestResult {
    let mut p = partition("masked", true, scenario::PLATFORM_MASKED)?;
    let stop = run(&mut p)?;
    ensure!(stop == Stop::Done(0), "guest ended with {stop:?}, reports {:?}", p.reports);
    let tsc_hz = crate::console::tsc_hz().max(1);
    let waited = reported(&p, check::WAIT_CYCLES)?;
    ensure!(
        waited >= tsc_hz / 1000 * guest::PLATFORM_WAIT_MS,
        "the guest waited only {waited} cycles"
    );
    let (pit, lapic) = (reported(&p, check::PIT_TICKS)?, reported(&p, check::LAPIC_TICKS)?);
    ensure!(
        pit == 0 && lapic == 0,
        "masked timers delivered {pit} PIT and {lapic} APIC interrupts"
    );
    let plat = p.platform.as_ref().ok_or("no platform")?;
    ensure!(plat.stats.pic_taken == 0 && plat.stats.lapic_taken == 0, "{:?}", plat.stats);
    // The timers ran all the same: the PIT's edges reached the PIC (masked there).
    ensure!(plat.stats.pit_edges > 0, "the PIT never ticked: the control shows nothing");
    log::info!(
        "platform: masked timers: {} PIT edges, {} APIC expiries, none delivered",
        plat.stats.pit_edges,
        plat.lapic.counts.timer
    );
    p.destroy();
    // HLT with interrupts on and nothing armed waits until the budget ends the run, the
    // host asleep meanwhile (a handful of exits, not one per poll); the partition stays
    // paused and resumes in the HLT.
    let mut idle = partition("idle", true, scenario::PLATFORM_IDLE)?;
    for round in 0..2 {
        let r = idle.run(Budget { ticks: 60, exits: 1_000_000 }).map_err(|e| format!("{e}"))?;
        log::info!(
            "platform: idle guest, run {round}: {:?} after {} exits, {} ticks",
            r.stop,
            r.exits,
            r.ticks
        );
        ensure!(
            r.stop == Stop::BudgetExhausted && r.ticks > 60,
            "idle guest: {:?} after {} ticks",
            r.stop,
            r.ticks
        );
        ensure!(
            r.exits < 40,
            "idle guest took {} exits in {} ticks: the wait polls",
            r.exits,
            r.ticks
        );
        ensure!(idle.state() == crate::partition::State::Paused, "idle guest not resumable");
    }
    idle.destroy();
    let mut h = partition("halted", true, scenario::HALT)?;
    let stop = run(&mut h)?;
    ensure!(stop == Stop::Halted, "HLT with IF = 0 on the platform ended with {stop:?}");
    h.destroy();
    Ok(())
}

/// Control: the same program in a partition without the platform stops at its first PIC
/// port, having taken no interrupt.
pub fn absent(_: &mut TestContext<'_>) -> TestResult {
    let mut p = partition("bare", false, scenario::PLATFORM_TIMERS)?;
    let stop = run(&mut p)?;
    ensure!(
        matches!(stop, Stop::UnhandledIo { port: 0x20, .. }),
        "without the platform the guest ended with {stop:?}"
    );
    ensure!(p.platform.is_none() && p.reported(check::PIT_TICKS).is_none(), "interrupts reported");
    p.destroy();
    Ok(())
}

/// An access the decoder cannot emulate (`inc dword [TPR]`) stops the run with its error.
pub fn undecodable(_: &mut TestContext<'_>) -> TestResult {
    let mut p = partition("undecodable", true, scenario::PLATFORM_UNDECODABLE)?;
    let stop = run(&mut p)?;
    let want = DecodeError::Unsupported { opcode: 0xFF };
    ensure!(
        matches!(stop, Stop::MmioRefused { gpa: 0xFEE0_0080, error, .. } if error == want),
        "the undecodable access ended with {stop:?}"
    );
    p.destroy();
    Ok(())
}

/// Hostile traffic through the real exit path: random port and APIC register accesses of
/// every size from the guest; the host serves each (decoded, emulated) and the guest
/// finishes.
pub fn hostile(_: &mut TestContext<'_>) -> TestResult {
    let mut p = partition("noisy", true, scenario::PLATFORM_HOSTILE)?;
    let stop = run(&mut p)?;
    ensure!(stop == Stop::Done(0), "the noisy guest ended with {stop:?}");
    let stats = p.platform.as_ref().ok_or("no platform")?.stats;
    let n = guest::PLATFORM_HOSTILE_ACCESSES;
    ensure!(stats.mmio == n && stats.ports == n, "{stats:?} for {n} accesses of each kind");
    p.destroy();
    Ok(())
}
