//! The guest page walk the MMIO decoder fetches through: 4 KiB, 2 MiB and 1 GiB pages,
//! 4- and 5-level tables, absent entries, tables outside guest RAM, and a fetch that
//! crosses into an unmapped page.

use crate::ensure;
use crate::partition::memory::GuestMemory;
use crate::partition::platform::decode::{DecodeError, MAX_LEN};
use crate::partition::platform::walk::{fetch, translate};
use crate::partition::vcpu::GuestControl;
use crate::testing::{TestContext, TestResult};
use boot::partition_config::Backing;

const P: u64 = 0x3; // present, writable
const PS: u64 = 1 << 7;

fn put(mem: &mut GuestMemory, gpa: u64, v: u64) -> TestResult {
    ensure!(mem.write(gpa, &v.to_le_bytes()), "cannot write {gpa:#x}");
    Ok(())
}

/// Translations and fetches through hand-built tables.
pub fn walk(_: &mut TestContext<'_>) -> TestResult {
    let mut mem = GuestMemory::allocate(4 << 20, Backing::Pages4K).ok_or("no memory")?;
    // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000.
    put(&mut mem, 0x1000, 0x2000 | P)?;
    put(&mut mem, 0x2000, 0x3000 | P)?;
    put(&mut mem, 0x2000 + 8, 0x4000_0000 | P | PS)?; // 1 GiB page at 1 GiB
    put(&mut mem, 0x2000 + 16, 0x7FFF_F000 | P)?; // a PD outside guest RAM
    put(&mut mem, 0x3000, 0x4000 | P)?;
    put(&mut mem, 0x3000 + 8, 0x20_0000 | P | PS | 1 << 12)?; // 2 MiB page (PAT bit set)
    put(&mut mem, 0x4000 + 5 * 8, 0x9000 | P)?;
    put(&mut mem, 0x4000 + 6 * 8, 0xB000 | P)?;
    // PML5 0x5000 -> the same PML4.
    put(&mut mem, 0x5000, 0x1000 | P)?;
    let four = GuestControl {
        cr0: 1 << 31 | 1,
        cr3: 0x1000,
        cr4: 1 << 5,
        efer: 1 << 10,
        code64: true,
        ..GuestControl::default()
    };
    let five = GuestControl { cr3: 0x5000, cr4: 1 << 5 | 1 << 12, ..four };
    for ctl in [four, five] {
        for (gva, want) in [
            (0x5123, Some(0x9123)),
            (0x6FFF, Some(0xBFFF)),
            (0x7000, None),
            (0x20_0456, Some(0x20_0456)),
            (0x4000_1234, Some(0x4000_1234)),
            (0x8000_0000, None),
            (0xC000_0000, None),
            (0x8000_0000_0000, None),
        ] {
            let got = translate(&mem, &ctl, gva);
            ensure!(
                got == want,
                "LA57 {}: {gva:#x} -> {got:x?}, want {want:x?}",
                ctl.cr4 >> 12 & 1
            );
        }
    }
    // Paging off: guest-virtual is guest-physical.
    ensure!(translate(&mem, &GuestControl::default(), 0x1234) == Some(0x1234), "paging off");
    // A fetch of 15 bytes at 0x6FFC gets the 4 of page 6 (at 0xBFFC), then stops.
    ensure!(mem.write(0xBFFC, &[0x89, 0x88, 0xB0, 0x00]), "write");
    let mut buf = [0u8; MAX_LEN];
    let n = fetch(&mem, &four, 0x6FFC, &mut buf).map_err(|e| alloc::format!("{e}"))?;
    ensure!(n == 4 && buf[..4] == [0x89, 0x88, 0xB0, 0x00], "fetched {n}: {:x?}", &buf[..n]);
    ensure!(
        crate::partition::platform::decode::decode(&buf[..n])
            == Err(DecodeError::Truncated { have: 4 }),
        "a cut-off instruction decoded"
    );
    ensure!(
        fetch(&mem, &four, 0x7000, &mut buf) == Err(DecodeError::FetchFault { gva: 0x7000 }),
        "an unmapped RIP fetched"
    );
    // A fetch crossing into a mapped page continues there.
    ensure!(mem.write(0x9FFE, &[0x8B, 0x81]), "write");
    ensure!(mem.write(0xB000, &[0x90, 0x03, 0, 0]), "write");
    let n = fetch(&mem, &four, 0x5FFE, &mut buf).map_err(|e| alloc::format!("{e}"))?;
    ensure!(
        n == MAX_LEN && buf[..6] == [0x8B, 0x81, 0x90, 0x03, 0, 0],
        "cross-page fetch {:x?}",
        &buf[..6]
    );
    Ok(())
}
