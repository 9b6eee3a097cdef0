//! Hostile guests (`guest::attack`): a partition that fills the CPU state VMRUN does not
//! switch cannot reach the host or the next partition (with a control run that turns the
//! world switch off and sees the leak), each intercepted instruction ends or is emulated
//! as `partition::intercept` documents while the host stays up with its state unchanged,
//! and guest log text is data.
#![deny(unsafe_code)]

use crate::ensure;
use crate::partition::world::{self, HostSnapshot, MXCSR_INIT, XCR0_INIT};
use crate::partition::{Budget, Partition, RunReport, Stop, BUILTIN_GUEST};
use crate::testing::{TestContext, TestResult};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use boot::partition_config::{Backing, PartitionSpec};
use guest::attack::{check, scenario, GUEST_LDTR, GUEST_TR};

const MIB: u64 = 1 << 20;

fn create(name: &str, s: u64) -> Result<Partition, String> {
    let mut p =
        Partition::create(&PartitionSpec::new(name, 4 * MIB, Backing::Pages4K), BUILTIN_GUEST)
            .map_err(|e| format!("create {name}: {e}"))?;
    p.scenario = s;
    Ok(p)
}

fn run(p: &mut Partition) -> Result<RunReport, String> {
    let r =
        p.run(Budget { ticks: 300, exits: 10_000 }).map_err(|e| format!("run {}: {e}", p.name))?;
    log::info!(
        "hostile: partition {} scenario {:#x}: {:?} after {} exits ({} emulated)",
        p.name,
        p.scenario,
        r.stop,
        r.exits,
        r.emulated
    );
    Ok(r)
}

fn snapshot() -> Result<HostSnapshot, String> {
    world::host_snapshot().map_err(|e| format!("host snapshot: {e}"))
}

/// The fields of two host snapshots that differ, in words (empty: none).
fn differences(before: &HostSnapshot, after: &HostSnapshot) -> Vec<String> {
    let mut d: Vec<String> = before
        .fields
        .iter()
        .zip(after.fields.iter())
        .filter(|(a, b)| a != b)
        .map(|((off, a), (_, b))| format!("host field {off:#x}: {a:#x} -> {b:#x}"))
        .collect();
    if before.xcr0 != after.xcr0 {
        d.push(format!("XCR0 {:#x} -> {:#x}", before.xcr0, after.xcr0));
    }
    if before.debug.dr != after.debug.dr {
        d.push(format!("DR0-3 {:x?} -> {:x?}", before.debug.dr, after.debug.dr));
    }
    if before.tr != after.tr {
        d.push(format!("TR {:#x} -> {:#x}", before.tr, after.tr));
    }
    d
}

/// What partition B found of A's state, one value per check.
struct Found {
    xmm: u64,
    x87: u64,
    mxcsr: u64,
    fpu: u64,
    dr: u64,
    seg: u64,
    xcr0: u64,
    pkru: u64,
    tr: u64,
    ldtr: u64,
}

impl Found {
    fn of(p: &Partition) -> Result<Found, String> {
        let get =
            |c| p.reported(c).ok_or(format!("{} reported no {c:#x}: {:?}", p.name, p.reports));
        Ok(Found {
            xmm: get(check::XMM_SECRETS)?,
            x87: get(check::X87_SECRETS)?,
            mxcsr: get(check::MXCSR)?,
            fpu: get(check::FPU_CONTROL)?,
            dr: get(check::DR_SECRETS)?,
            seg: get(check::SEGMENT_SECRETS)?,
            xcr0: get(check::XCR0)?,
            pkru: get(check::PKRU)?,
            tr: get(check::TR)?,
            ldtr: get(check::LDTR)?,
        })
    }

    fn line(&self) -> String {
        format!(
            "XMM/YMM holding the secret {}, x87 ST0 {}, MXCSR {:#x}, FCW|FTW {:#x}, DR0-3 {}, FS/GS/KERNEL_GS_BASE {}, XCR0 {:#x}, PKRU {:#x}, TR {:#x}, LDTR {:#x}",
            self.xmm, self.x87, self.mxcsr, self.fpu, self.dr, self.seg, self.xcr0, self.pkru, self.tr, self.ldtr
        )
    }
}

/// A fills, ends and is destroyed; B (fresh) reads. Returns what B found and how the
/// host's own state changed across A's run.
fn fill_then_read() -> Result<(Found, Vec<String>, u64), String> {
    let before = snapshot()?;
    let mut a = create("a", scenario::STATE_FILL)?;
    let r = run(&mut a)?;
    let after = snapshot()?;
    ensure!(r.stop == Stop::Done(0), "A ended with {:?}", r.stop);
    let features = a.reported(check::FEATURES).unwrap_or(0);
    ensure!(
        a.reported(check::TR) == Some(GUEST_TR as u64)
            && a.reported(check::LDTR) == Some(GUEST_LDTR as u64),
        "A did not load its TR/LDTR: {:?}",
        a.reports
    );
    a.destroy();
    let mut b = create("b", scenario::STATE_READ)?;
    let r = run(&mut b)?;
    ensure!(r.stop == Stop::Done(0), "B ended with {:?}", r.stop);
    let found = Found::of(&b)?;
    b.destroy();
    Ok((found, differences(&before, &after), features))
}

/// With the world switch, B finds only the documented clean state and A's run left the
/// host's FS/GS/TR/LDTR/SYSCALL MSRs, XCR0 and DR0-DR3 as they were.
pub fn state_isolation(_: &mut TestContext<'_>) -> TestResult {
    let (found, host_changes, features) = fill_then_read()?;
    log::info!("hostile: A found features {features:#x} (1 FSGSBASE, 2 AVX, 4 PKU)");
    log::info!("hostile: B found {}", found.line());
    log::info!("hostile: host state changed by A's run: {host_changes:?}");
    ensure!(features & 1 != 0, "no FSGSBASE under this CPU: the FS/GS part proves nothing");
    ensure!(host_changes.is_empty(), "A changed the host's state: {host_changes:?}");
    ensure!(
        found.xmm == 0 && found.x87 == 0 && found.dr == 0 && found.seg == 0,
        "B found A's secret: {}",
        found.line()
    );
    ensure!(found.mxcsr == MXCSR_INIT as u64, "B's MXCSR {:#x}", found.mxcsr);
    ensure!(found.fpu == 0x037F, "B's FCW|FTW {:#x} (clean: FCW 0x37F, all tags empty)", found.fpu);
    ensure!(found.xcr0 == XCR0_INIT, "B started with XCR0 {:#x}", found.xcr0);
    ensure!(found.pkru == 0, "B's PKRU {:#x}", found.pkru);
    ensure!(found.tr == 0 && found.ldtr == 0, "B's TR {:#x} LDTR {:#x}", found.tr, found.ldtr);
    Ok(())
}

/// The control: with the world switch off (the test knob), the same two guests show the
/// leak the switch prevents, so `state_isolation` can fail. The host's state is put
/// back from a snapshot afterwards.
#[cfg(feature = "test-controls")]
pub fn state_control(_: &mut TestContext<'_>) -> TestResult {
    let host = snapshot()?;
    world::set_switch_for_test(false);
    let result = fill_then_read();
    world::set_switch_for_test(true);
    let restored = world::restore_host(&host).map_err(|e| format!("restore: {e}"));
    let (found, host_changes, _) = result?;
    restored?;
    let still = differences(&host, &snapshot()?);
    log::info!("hostile: control (world switch off): B found {}", found.line());
    log::info!("hostile: control: host state changed by A's run: {host_changes:?}");
    ensure!(still.is_empty(), "host state not restored after the control: {still:?}");
    ensure!(
        found.xmm >= 16 && found.x87 == 1 && found.dr == 4 && found.seg == 3,
        "without the switch B should have found A's secrets: {}",
        found.line()
    );
    ensure!(found.mxcsr == guest::attack::SECRET_MXCSR as u64, "control: MXCSR {:#x}", found.mxcsr);
    ensure!(found.tr == GUEST_TR as u64, "control: TR {:#x}", found.tr);
    ensure!(!host_changes.is_empty(), "control: A's run changed nothing in the host");
    Ok(())
}

/// How a one-instruction attack must end.
enum Outcome {
    /// Emulated: the guest resumed and reported done.
    Resumed,
    /// Refused: the partition stopped, naming this instruction.
    Refused(&'static str),
    /// Stopped at this exception vector (whatever the intercepts asked).
    Exception(u8),
}

/// Every intercepted instruction the issue names, each in its own run of one partition
/// (restarted between scenarios): it is refused or emulated as `partition::intercept`
/// documents, the host stays up, and its state is the same after all of them.
pub fn instructions(_: &mut TestContext<'_>) -> TestResult {
    let cases = [
        (scenario::XSETBV_BAD, Outcome::Refused("XSETBV")),
        (scenario::LTR, Outcome::Resumed),
        (scenario::INVD, Outcome::Resumed),
        (scenario::WBINVD, Outcome::Resumed),
        (scenario::RDPMC, Outcome::Refused("RDPMC")),
        (scenario::MWAIT, Outcome::Refused("MWAIT")),
        (scenario::MONITOR, Outcome::Refused("MONITOR")),
        (scenario::INVLPGA, Outcome::Refused("INVLPGA")),
        (scenario::ICEBP, Outcome::Refused("ICEBP")),
        (scenario::RDPRU, Outcome::Refused("RDPRU")),
        (scenario::DB_LOOP, Outcome::Exception(1)),
    ];
    let attacks = cases.len();
    let before = snapshot()?;
    let mut p = create("h", scenario::CPUID_VIEW)?;
    let r = run(&mut p)?;
    ensure!(r.stop == Stop::Done(0) && r.emulated >= 3, "CPUID view: {r:?}");
    let ext = p.reported(check::CPUID_EXT_ECX).unwrap_or(u64::MAX);
    let l1 = p.reported(check::CPUID_1_ECX).unwrap_or(0);
    let host_ext = core::arch::x86_64::__cpuid(0x8000_0001).ecx as u64;
    log::info!("hostile: CPUID 0x80000001 ECX host {host_ext:#x}, guest {ext:#x}; guest leaf 1 ECX {l1:#x}");
    let vmx = crate::partition::backend::Backend::detect()
        == Some(crate::partition::backend::Backend::Vmx);
    if vmx {
        let host_l1 = core::arch::x86_64::__cpuid(1).ecx as u64;
        ensure!(host_l1 & 1 << 5 != 0, "control: the host's CPUID shows no VMX");
        ensure!(l1 & 1 << 5 == 0, "the guest is told it has VMX: {l1:#x}");
    } else {
        ensure!(host_ext & 4 != 0, "control: the host's CPUID shows no SVM");
    }
    ensure!(ext & 4 == 0, "the guest is told it has SVM: {ext:#x}");
    ensure!(
        l1 & 1 << 31 != 0 && l1 & 1 << 3 == 0,
        "leaf 1 ECX {l1:#x}: hypervisor bit off or MONITOR on"
    );
    ensure!(
        p.reported(check::CPUID_HV_EBX) == Some(u32::from_le_bytes(*b"uhv-") as u64),
        "no hypervisor signature"
    );
    for (s, want) in cases {
        p.restart(s).map_err(|e| format!("restart: {e}"))?;
        // Ask for no exception intercepts: #DB, #AC and #MC must stay intercepted anyway.
        p.set_exception_intercepts(if s == scenario::DB_LOOP { 0 } else { u32::MAX });
        let r = run(&mut p)?;
        let ok = match (&want, r.stop) {
            (Outcome::Resumed, Stop::Done(0)) => p.reported(check::RESUMED) == Some(s),
            (Outcome::Refused(w), Stop::Refused { instruction, .. }) => instruction.starts_with(w),
            // QEMU's TCG does not check the XSETBV intercept: the CPU itself refuses the
            // value with #GP, which stops the partition just the same.
            (Outcome::Refused("XSETBV"), Stop::Exception { vector: 13, .. }) => true,
            // QEMU 7.2's TCG decodes ICEBP (0xF1) as an invalid opcode: #UD, intercepted.
            (Outcome::Refused("ICEBP"), Stop::Exception { vector: 6 | 1, .. }) => true,
            // QEMU's TCG has no RDPRU: #UD, intercepted (real CPUs with RDPRU exit).
            (Outcome::Refused("RDPRU"), Stop::Exception { vector: 6, .. }) => true,
            // On an Intel CPU (VMX) INVLPGA is an invalid opcode, and XSETBV too where
            // there is no XSAVE (Nehalem): #UD, intercepted.
            (Outcome::Refused("INVLPGA" | "XSETBV"), Stop::Exception { vector: 6, .. }) => vmx,
            (Outcome::Exception(v), Stop::Exception { vector, .. }) => vector == *v,
            _ => false,
        };
        ensure!(ok, "scenario {s:#x} ended with {:?} (reports {:?})", r.stop, p.reports);
        if s == scenario::LTR {
            ensure!(p.reported(check::TR) == Some(GUEST_TR as u64), "the guest's LTR did not take");
        }
        if matches!(want, Outcome::Resumed) {
            ensure!(r.emulated >= 1 || s == scenario::LTR, "scenario {s:#x}: nothing emulated");
        }
        let changed = differences(&before, &snapshot()?);
        ensure!(changed.is_empty(), "scenario {s:#x} changed the host's state: {changed:?}");
    }
    p.destroy();
    log::info!("hostile: host up, its state unchanged after {attacks} attacks");
    Ok(())
}

/// A guest logs newlines, escape sequences and copies of host lines: the host keeps the
/// text as the guest's message, and prints it quoted and escaped (the QEMU suite checks
/// the console).
pub fn log_is_data(_: &mut TestContext<'_>) -> TestResult {
    let mut p = create("forger", scenario::LOG_FORGE)?;
    let r = run(&mut p)?;
    ensure!(r.stop == Stop::Done(0), "forger ended with {:?}", r.stop);
    ensure!(p.messages.len() == 3, "messages {:?}", p.messages);
    ensure!(p.messages[0].contains('\n') && p.messages[1].contains('\x1b'), "{:?}", p.messages);
    for m in &p.messages {
        let shown = format!("{}", guest::hypercall::Escaped(m.as_bytes()));
        ensure!(
            !shown.chars().any(|c| c.is_control()),
            "escaped text keeps a control character: {shown:?}"
        );
    }
    p.destroy();
    Ok(())
}

/// Creates `name` with the first edu attached through the IOMMU and runs `s` in it.
fn with_device(
    ctx: &mut TestContext<'_>,
    name: &str,
    s: u64,
    accept_unreset: bool,
) -> Result<Partition, String> {
    let platform = &mut *ctx.platform;
    let f = platform.edus.first().ok_or("needs an edu device")?.bdf;
    let f = platform.pci.iter().find(|p| p.bdf == f).ok_or("edu not enumerated")?.clone();
    let route = platform.iommu.route(f.bdf).ok_or("edu sits behind no IOMMU")?;
    let mut p = create(name, s)?;
    p.accept_unreset = accept_unreset;
    if let Err(e) = p.attach_device(&mut platform.iommu, &f, route) {
        let _ = p.destroy_in(&mut platform.iommu);
        return Err(format!("{e}"));
    }
    Ok(p)
}

/// A leaves a secret in its edu's DMA buffer and is destroyed; edu offers no reset, so
/// B is refused the device, and the same partition re-created gets it back. Control:
/// a partition configured with `unreset-devices allow` gets the device and reads A's
/// secret out of it, so the refusal is what kept it from B. Run it last in a boot: it
/// leaves the device marked as the control partition's.
pub fn device_reassignment(ctx: &mut TestContext<'_>) -> TestResult {
    let f = ctx.platform.edus.first().ok_or("needs an edu device")?.bdf;
    let func = ctx.platform.pci.iter().find(|p| p.bdf == f).ok_or("edu not enumerated")?;
    let method = crate::partition::reset::method(func);
    log::info!("hostile: {f} offers {method}");
    ensure!(method == crate::partition::reset::ResetMethod::None, "edu offers {method}?");
    let mut a = with_device(ctx, "leaver", scenario::DEVICE_LEAVE, false)?;
    let r = run(&mut a)?;
    ensure!(r.stop == Stop::Done(0), "leaver ended with {:?} ({:?})", r.stop, a.reports);
    a.destroy_in(&mut ctx.platform.iommu)?;
    let refused = with_device(ctx, "taker", scenario::DEVICE_READ, false);
    log::info!("hostile: taker asks for {f}: {:?}", refused.as_ref().map(|_| "attached"));
    let Err(why) = refused else {
        return Err(format!("{f} was given to another partition without a reset"));
    };
    ensure!(why.contains("could not be reset"), "refused for another reason: {why}");
    // The same partition, re-created, may have its own device back.
    let again = with_device(ctx, "leaver", scenario::DEVICE_READ, false)?;
    again.destroy_in(&mut ctx.platform.iommu)?;
    // Control: accepting unreset devices, a partition finds the leaver's secret.
    let mut c = with_device(ctx, "control", scenario::DEVICE_READ, true)?;
    let r = run(&mut c)?;
    let found = c.reported(check::DEVICE_SECRET_BYTES);
    c.destroy_in(&mut ctx.platform.iommu)?;
    for e in &ctx.platform.edus {
        e.set_bus_master(true);
    }
    log::info!(
        "hostile: control: a partition that accepts unreset devices read {found:?} secret bytes"
    );
    ensure!(r.stop == Stop::Done(0), "control ended with {:?}", r.stop);
    ensure!(
        found == Some(guest::DMA_LEN),
        "control found {found:?} secret bytes: the test cannot tell"
    );
    Ok(())
}

/// The control for the #DB loop: with the forced intercepts turned off (the test knob)
/// and no exception intercepted, the guest takes its own #DB forever, until its budget
/// ends it: so `instructions` would see it if the host let guests take #DB. (#AC cannot
/// be provoked under QEMU's TCG, which does no alignment checking: its forced intercept
/// is the same code path, unproven here.)
#[cfg(feature = "test-controls")]
pub fn exception_loops_control(_: &mut TestContext<'_>) -> TestResult {
    let mut p = create("loops", scenario::DB_LOOP)?;
    crate::partition::svm::force_intercepts_for_test(false);
    p.set_exception_intercepts(0);
    let db = run(&mut p);
    crate::partition::svm::force_intercepts_for_test(true);
    p.destroy();
    let db = db?;
    log::info!(
        "hostile: control (#DB not forced): the #DB guest ended {:?} after {} exits",
        db.stop,
        db.exits
    );
    ensure!(db.stop == Stop::BudgetExhausted, "#DB guest: {:?}", db.stop);
    Ok(())
}

/// A device that offers a function-level reset is reset by it when released: QEMU's NVMe
/// controller (`-device nvme`, with a PCI Express capability that offers FLR) gets a
/// cache-line size and an interrupt line, which a function reset clears and the reset
/// code does not put back (it restores only BARs and the command register); after the
/// release both read 0. Control: both read back before the reset, so a reset that did
/// nothing would fail. (QEMU's NVMe model keeps its own AQA/ASQ registers across the
/// reset, so the device-internal part is not observable with it.) A second control: edu,
/// released the same way but without a reset to offer, keeps both registers.
pub fn flr_on_release(ctx: &mut TestContext<'_>) -> TestResult {
    let f = ctx
        .platform
        .pci
        .iter()
        .find(|f| f.class == (0x01, 0x08, 0x02))
        .ok_or("needs an NVMe controller (-device nvme)")?
        .clone();
    let method = crate::partition::reset::method(&f);
    log::info!("hostile: {} (NVMe) offers {method}", f.bdf);
    ensure!(method == crate::partition::reset::ResetMethod::Flr, "NVMe offers {method}");
    let c = f.config();
    let marks = |c: &crate::pci::ConfigSpace| (c.read32(0x0C) & 0xFF, c.read32(0x3C) & 0xFF);
    c.write32(0x0C, c.read32(0x0C) & !0xFF | 0x10);
    c.write32(0x3C, c.read32(0x3C) & !0xFF | 0x0B);
    let before = marks(&c);
    let used = crate::partition::reset::released(&f, "flrtest");
    let after = marks(&c);
    log::info!("hostile: NVMe cache-line size and interrupt line {before:x?} before, {after:x?} after the {used} on release");
    ensure!(before == (0x10, 0x0B), "control: the registers did not take the values ({before:x?})");
    ensure!(
        used == crate::partition::reset::ResetMethod::Flr && after == (0, 0),
        "{after:x?} after {used}"
    );
    ensure!(
        f.memory_bar(0).is_some_and(|(b, _)| c.read32(0x10) & !0xF == b as u32),
        "BAR0 not restored"
    );
    crate::partition::reset::may_assign(f.bdf, "someone-else", false)
        .map_err(|e| format!("a reset device was still refused: {e}"))
}

/// What the world switch costs: a guest taking [`guest::attack::EXIT_LOOP_COUNT`]
/// CPUID exits, timed with the switch on and (test knob) off; one line with both and the
/// difference per exit. Under QEMU's TCG these are emulation costs, not a real CPU's.
#[cfg(feature = "test-controls")]
pub fn switch_cost(_: &mut TestContext<'_>) -> TestResult {
    let mut per_exit = [0u64; 2];
    for (i, on) in [true, false].into_iter().enumerate() {
        let mut p = create("cost", scenario::EXIT_LOOP)?;
        world::set_switch_for_test(on);
        let c0 = crate::partition::cycles();
        let r = p.run(Budget { ticks: 30_000, exits: 1_000_000 });
        let cycles = crate::partition::cycles() - c0;
        world::set_switch_for_test(true);
        p.destroy();
        let r = r.map_err(|e| format!("run: {e}"))?;
        ensure!(r.stop == Stop::Done(0), "exit loop ended with {:?}", r.stop);
        ensure!(r.emulated >= guest::attack::EXIT_LOOP_COUNT, "{} emulated", r.emulated);
        per_exit[i] = cycles / r.exits.max(1);
    }
    log::info!(
        "bench world_switch exits={} cycles_per_exit_switched={} cycles_per_exit_unswitched={} switch_cycles_per_exit={}",
        guest::attack::EXIT_LOOP_COUNT,
        per_exit[0],
        per_exit[1],
        per_exit[0] as i64 - per_exit[1] as i64
    );
    Ok(())
}

/// Host-physical addresses reach only the hypervisor's own guest program: a partition
/// running any other image (here a copy of the same bytes, as a configuration's
/// `image module:` would load) finds 0 in its boot page's `dma_foreign` and
/// `dma_hypervisor` even with isolation probes set. Control: the built-in program, with
/// the same probes, finds them.
pub fn no_host_addresses(_: &mut TestContext<'_>) -> TestResult {
    let copy: Vec<u8> = BUILTIN_GUEST.to_vec();
    let mut found = [(0u64, 0u64); 2];
    for (i, image) in [&copy[..], BUILTIN_GUEST].into_iter().enumerate() {
        let mem = crate::partition::memory::GuestMemory::allocate(4 * MIB, Backing::Pages4K)
            .ok_or("no memory")?;
        let mut p = Partition::create_in("probe", mem, image).map_err(|e| format!("{e}"))?;
        p.scenario = guest::scenario::HALT;
        p.isolation.foreign = 0x1234_5000;
        p.isolation.hypervisor = 0x6789_a000;
        let r = run(&mut p)?;
        ensure!(r.stop == Stop::Halted, "probe guest ended with {:?}", r.stop);
        let mem = p.memory().ok_or("no memory")?;
        let (mut f, mut h) = ([0u8; 8], [0u8; 8]);
        mem.read(guest::BOOT_INFO + 7 * 8, &mut f);
        mem.read(guest::BOOT_INFO + 8 * 8, &mut h);
        found[i] = (u64::from_le_bytes(f), u64::from_le_bytes(h));
        p.destroy();
    }
    log::info!(
        "hostile: boot-page probes: other image {:x?}, built-in program {:x?}",
        found[0],
        found[1]
    );
    ensure!(found[0] == (0, 0), "a configured image was told host addresses {:x?}", found[0]);
    ensure!(
        found[1] == (0x1234_5000, 0x6789_a000),
        "control: the built-in program got {:x?}",
        found[1]
    );
    Ok(())
}

/// Without the `test-controls` feature (a `--release` build) there is no knob to turn the
/// mechanism off: the control cannot run, and says so rather than pass.
#[cfg(not(feature = "test-controls"))]
pub fn state_control(_: &mut TestContext<'_>) -> TestResult {
    Err(NO_CONTROLS.into())
}

/// See [`state_control`]: no knob in this build.
#[cfg(not(feature = "test-controls"))]
pub fn exception_loops_control(_: &mut TestContext<'_>) -> TestResult {
    Err(NO_CONTROLS.into())
}

/// See [`state_control`]: no knob in this build.
#[cfg(not(feature = "test-controls"))]
pub fn switch_cost(_: &mut TestContext<'_>) -> TestResult {
    Err(NO_CONTROLS.into())
}

/// Why a control cannot run in this build.
#[cfg(not(feature = "test-controls"))]
const NO_CONTROLS: &str = "this kernel was built without its test controls (a --release \
    build): the knob that turns the mechanism off is not in it; run the debug build";
