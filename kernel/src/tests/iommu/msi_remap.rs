//! Device interrupts through the remapping tables, proven with the edu device's own MSI
//! (raised through its register 0x60; QEMU sends it with the device's requester id): an
//! entry the hypervisor installs for edu 0 delivers its MSI at the host vector the entry
//! names; the unassigned edu 1, pointed at the same entry (VT-d) or at the same index
//! (AMD-Vi: its own table of aborting entries), gets nothing through, nor with an NMI;
//! and once the entry is removed, edu 0's MSI is refused too.
//!
//! This is the remapping half of interrupt delivery (an entry pointed at a host vector for
//! one device); the partition story shows the injection into the owning vCPU.

use super::interrupt_forgery::{counted, observe, with_rig, Arrival, COUNT_VECTOR, PLAIN_VECTOR};
use super::Rig;
use crate::ensure;
use crate::iommu::Units;
use crate::mem::KernelMemory;
use crate::msi::Msi;
use crate::testing::{TestContext, TestResult};
use crate::Platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// MSI data: delivery mode NMI.
const DATA_NMI: u16 = 0x400;

/// Edu `i` raises its interrupt; returns what reached the local APIC.
fn raise(p: &mut Platform, i: usize) -> Result<Arrival, String> {
    let edu = p.edus.get_mut(i).ok_or("no such edu device")?;
    let (a, ()) = observe(|| {
        edu.raise_interrupt(1);
        for _ in 0..1000 {
            core::hint::spin_loop();
        }
    })?;
    edu.ack_interrupt(1);
    Ok(a)
}

/// The test on whichever IOMMU the machine has; both edu devices' MSI is off afterwards.
pub fn msi(ctx: &mut TestContext<'_>) -> TestResult {
    let p = &mut *ctx.platform;
    ensure!(p.edus.len() >= 2, "needs two edu devices");
    let msi = |p: &Platform, i: usize| {
        Msi::find(p.edus[i].config()).ok_or_else(|| format!("edu {i} has no MSI capability"))
    };
    let (m0, m1) = (msi(p, 0)?, msi(p, 1)?);
    let rid = |p: &Platform, i: usize| {
        p.iommu.route(p.edus[i].bdf).map(|r| r.requester_id).ok_or("edu behind no IOMMU")
    };
    let (r0, r1) = (rid(p, 0)?, rid(p, 1)?);
    let result = match p.iommu.units {
        Units::Vtd(_) => vtd(p, m0, m1, r0, r1),
        Units::Amd(_) => amd(p, m0, m1, r0),
        Units::None => Err("this machine has no IOMMU".into()),
    };
    m0.set_enabled(false);
    m1.set_enabled(false);
    result
}

fn vtd(p: &mut Platform, m0: Msi, m1: Msi, r0: u16, r1: u16) -> TestResult {
    use iommu::vtd::{remappable_msi, Irte};
    const HANDLE: u16 = 8;
    let apic = crate::apic::id();
    let mut records: Vec<String> = Vec::new();
    take(p, &mut Vec::new())?;
    let entry = Irte::remapped(COUNT_VECTOR, apic, false, r0).map_err(|e| format!("{e}"))?;
    with_rig!(p, Vtd, 0, |rig| rig.unit.set_irte(HANDLE, entry).map_err(|e| format!("{e}")))?;
    let before = counted();
    m0.program(remappable_msi(HANDLE).0, 0);
    let own = raise(p, 0)?;
    ensure!(own.count && !own.plain, "edu 0's MSI through its entry did not arrive: {own:?}");
    m1.program(remappable_msi(HANDLE).0, 0);
    let foreign = raise(p, 1)?;
    ensure!(
        !foreign.any(),
        "edu 1's MSI naming edu 0's entry arrived (source id not verified): {foreign:?}"
    );
    m1.program(remappable_msi(HANDLE + 1).0, DATA_NMI);
    let absent = raise(p, 1)?;
    ensure!(!absent.any(), "edu 1's MSI naming an absent entry arrived: {absent:?}");
    take(p, &mut records)?;
    with_rig!(p, Vtd, 0, |rig| rig.unit.clear_irte(HANDLE).map_err(|e| format!("{e}")))?;
    let removed = raise(p, 0)?;
    ensure!(!removed.any(), "edu 0's MSI still arrives after its entry was removed: {removed:?}");
    take(p, &mut records)?;
    for r in &records {
        log::info!("msi: the unit recorded: {r}");
    }
    log::info!(
        "msi: edu {r0:#06x} -> handle {HANDLE} -> vector {COUNT_VECTOR}: delivered ({} at the gate); edu {r1:#06x} naming that handle: refused; naming an absent one: refused; handle removed: refused; {} fault records",
        counted() - before,
        records.len()
    );
    Ok(())
}

/// Reads and clears the VT-d fault records into `records`, in words.
fn take(p: &mut Platform, records: &mut Vec<String>) -> TestResult {
    with_rig!(p, Vtd, 0, |rig| {
        rig.unit.handle_faults(|r| records.push(format!("{r}")));
        Ok(())
    })
}

fn amd(p: &mut Platform, m0: Msi, m1: Msi, r0: u16) -> TestResult {
    use iommu::amdvi::interrupts::{InterruptTable, Irte};
    use iommu::amdvi::DteInterrupts;
    let apic = u8::try_from(crate::apic::id()).map_err(|_| "APIC id above 255")?;
    let mut mem = KernelMemory;
    let table = InterruptTable::allocate(&mut mem).map_err(|e| format!("{e}"))?;
    let result = (|| -> TestResult {
        // Index = the MSI data's bits 10:0: the device asks for PLAIN_VECTOR and gets the
        // vector the entry names instead.
        table
            .write(&mut mem, u16::from(PLAIN_VECTOR), Irte::remapped(COUNT_VECTOR, apic))
            .map_err(|e| format!("{e}"))?;
        let fields = DteInterrupts::remapped(table.base()).map_err(|e| format!("{e}"))?;
        with_rig!(p, Amd, 0, |rig| rig
            .unit
            .set_interrupts(r0, fields)
            .map_err(|e| format!("{e}")))?;
        let address = 0xFEE0_0000 | (u64::from(apic) << 12);
        let before = counted();
        m0.program(address, u16::from(PLAIN_VECTOR));
        let own = raise(p, 0)?;
        ensure!(
            own.count && !own.plain,
            "edu 0's MSI (index {PLAIN_VECTOR}) was not remapped to vector {COUNT_VECTOR}: {own:?}"
        );
        m1.program(address, u16::from(PLAIN_VECTOR));
        let other = raise(p, 1)?;
        ensure!(!other.any(), "edu 1's MSI (its table has no valid entry) arrived: {other:?}");
        m1.program(address, DATA_NMI);
        let nmi = raise(p, 1)?;
        ensure!(!nmi.any(), "edu 1's NMI message arrived: {nmi:?}");
        with_rig!(p, Amd, 0, |rig| rig.unit.restore_interrupts(r0).map_err(|e| format!("{e}")))?;
        let removed = raise(p, 0)?;
        ensure!(!removed.any(), "edu 0's MSI still arrives with its table gone: {removed:?}");
        let events = with_rig!(p, Amd, 0, |rig| rig.unit.drain_events());
        log::info!(
            "msi: edu {r0:#06x} index {PLAIN_VECTOR} -> vector {COUNT_VECTOR}: delivered ({} at the gate); the other edu (aborting table): refused, NMI refused; table removed: refused; {} event records",
            counted() - before,
            events.len()
        );
        Ok(())
    })();
    // Whatever happened, no entry points at the table any more before it is freed.
    let restored =
        with_rig!(p, Amd, 0, |rig| rig.unit.restore_interrupts(r0).map_err(|e| format!("{e}")));
    if restored.is_ok() {
        table.free(&mut mem);
    }
    result.and(restored)
}
