//! Guest-virtual to guest-physical through the guest's own page tables (in its memory),
//! to fetch the instruction that touched an emulated MMIO page. 4- and 5-level paging
//! (CR4.LA57), 1 GiB and 2 MiB pages; tables outside guest RAM translate nothing.

use super::super::memory::GuestMemory;
use super::super::vcpu::GuestControl;
use super::decode::{DecodeError, MAX_LEN};

const PRESENT: u64 = 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
const CR0_PG: u64 = 1 << 31;
const CR4_LA57: u64 = 1 << 12;

/// The guest-physical address `gva` maps to, `None` when a level is not present or a
/// table lies outside guest RAM.
pub fn translate(mem: &GuestMemory, ctl: &GuestControl, gva: u64) -> Option<u64> {
    if ctl.cr0 & CR0_PG == 0 {
        return Some(gva);
    }
    let levels = if ctl.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
    let mut table = ctl.cr3 & ADDRESS;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let index = (gva >> shift) & 0x1FF;
        let mut raw = [0u8; 8];
        if mem.read(table + index * 8, &mut raw) != 8 {
            return None;
        }
        let entry = u64::from_le_bytes(raw);
        if entry & PRESENT == 0 {
            return None;
        }
        let addr = entry & ADDRESS;
        if level == 1 || ((2..=3).contains(&level) && entry & PAGE_SIZE_BIT != 0) {
            let page = (1u64 << shift) - 1;
            return Some((addr & !page) | (gva & page));
        }
        table = addr;
    }
    None
}

/// Reads up to [`MAX_LEN`] instruction bytes at guest-virtual `rip` into `out`, page by
/// page; returns how many were readable (the decoder reports a cut-off instruction).
pub fn fetch(
    mem: &GuestMemory,
    ctl: &GuestControl,
    rip: u64,
    out: &mut [u8; MAX_LEN],
) -> Result<usize, DecodeError> {
    let mut done = 0;
    while done < MAX_LEN {
        let gva = rip.wrapping_add(done as u64);
        let Some(gpa) = translate(mem, ctl, gva) else {
            if done == 0 {
                return Err(DecodeError::FetchFault { gva });
            }
            break;
        };
        let n = (MAX_LEN - done).min(4096 - (gva & 0xFFF) as usize);
        let got = mem.read(gpa, &mut out[done..done + n]);
        done += got;
        if got < n {
            break;
        }
    }
    Ok(done)
}
