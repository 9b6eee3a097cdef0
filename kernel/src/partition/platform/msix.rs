//! MSI-X for an assigned function: the guest programs its own table, the device only ever
//! sends messages the IOMMU remaps.
//!
//! At attach ([`Msix::set_up`]) the function's physical table is masked entry by entry and
//! up to [`MAX_ENTRIES`] entries each get a host vector of the pool ([`HostVector`]) and
//! an interrupt-remapping entry of their own (VT-d IRTE with source-id verification,
//! AMD-Vi entry `index` of the device's table); the remapped message is written into the
//! physical entry, which stays masked. The guest sees an MSI-X capability whose table size
//! is the number of entries routed, with the physical table and PBA offsets (BAR0 is at
//! its guest-physical address, same layout); the pages holding the table and the PBA are
//! left out of the nested map, so every guest access to them faults and is emulated here
//! (the trapped-page decoder, [`super::decode`]). The guest's address, data and mask of
//! each entry are kept here and never reach the device: the physical entry is unmasked
//! exactly while the guest has MSI-X enabled, the function unmasked, the entry unmasked
//! and a valid fixed-delivery message in it ([`Entry::live`]). An interrupt then lands at
//! the entry's host vector; before the next guest entry [`Msix::drain`] hands the guest's
//! vector to the partition's local APIC. The PBA reads the device's own pending bits.

use crate::iommu::interrupts::DeviceRouting;
use crate::iommu::{IommuSystem, Route, RouteError};
use crate::mmio::MmioWindow;
use crate::partition::interrupts::HostVector;
use crate::pci::ConfigSpace;
use alloc::vec::Vec;

/// MSI-X capability id.
pub const CAP_MSIX: u8 = 0x11;
/// The most entries of one function that are routed (and shown to the guest).
pub const MAX_ENTRIES: u16 = 8;
/// Bytes per table entry.
const ENTRY_BYTES: u64 = 16;
/// Message control: MSI-X enable, function mask; table size - 1 in bits 10:0.
const CTL_ENABLE: u16 = 1 << 15;
const CTL_FUNCTION_MASK: u16 = 1 << 14;
const CTL_TABLE_SIZE: u16 = 0x7FF;
/// Vector control: the entry's mask bit.
const ENTRY_MASKED: u32 = 1;
const PAGE: u64 = 4096;

/// Why a function's MSI-X cannot be given to a guest.
#[derive(Debug)]
pub enum MsixError {
    /// No MSI-X capability.
    Absent,
    /// The table or PBA is not in BAR0 (the only BAR passed through), or outside it.
    Placement {
        /// Table BIR and offset.
        table: (u8, u64),
        /// PBA BIR and offset.
        pba: (u8, u64),
    },
    /// No host vector was free for the first entry.
    NoVector,
    /// The hypervisor could not map the table pages.
    Mmio(crate::mmio::MmioError),
    /// The IOMMU refused the routing.
    Route(RouteError),
}

impl core::fmt::Display for MsixError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MsixError::Absent => f.write_str("no MSI-X capability"),
            MsixError::Placement { table, pba } => write!(
                f,
                "MSI-X table (BAR {} + {:#x}) or PBA (BAR {} + {:#x}) not inside BAR0",
                table.0, table.1, pba.0, pba.1
            ),
            MsixError::NoVector => f.write_str("no host vector free"),
            MsixError::Mmio(e) => write!(f, "{e}"),
            MsixError::Route(e) => write!(f, "{e}"),
        }
    }
}

/// One routed entry: the guest's programming and the host side.
#[derive(Debug)]
struct Entry {
    address: u64,
    data: u32,
    masked: bool,
    host: HostVector,
    /// The physical entry is unmasked.
    live: bool,
}

impl Entry {
    /// The guest's vector when its message is a fixed or lowest-priority interrupt to the
    /// local APIC's window with a vector above the exceptions.
    fn guest_vector(&self) -> Option<u8> {
        let vector = (self.data & 0xFF) as u8;
        let mode = (self.data >> 8) & 7;
        (self.address >> 20 == 0xFEE && vector >= 32 && mode <= 1).then_some(vector)
    }
}

/// A physical range of trapped pages: BAR offset, and the hypervisor's mapping.
#[derive(Debug)]
struct Trapped {
    bar_offset: u64,
    window: MmioWindow,
}

/// One function's emulated MSI-X.
#[derive(Debug)]
pub struct Msix {
    cfg: ConfigSpace,
    cap: u16,
    /// Physical table size (entries), and the dwords naming table and PBA.
    physical_size: u16,
    table_dword: u32,
    pba_dword: u32,
    table_offset: u64,
    pba_offset: u64,
    entries: Vec<Entry>,
    trapped: Vec<Trapped>,
    routing: Option<DeviceRouting>,
    enabled: bool,
    function_mask: bool,
    /// Guest vectors handed to the local APIC.
    pub injected: u64,
    /// Interrupts dropped (MSI-X off or no valid message when they arrived).
    pub dropped: u64,
}

impl Msix {
    /// Takes over `cfg`'s MSI-X (BAR0 at host-physical `bar_base`, `bar_size` bytes):
    /// every physical entry masked, up to [`MAX_ENTRIES`] routed to host vectors of the
    /// pool through the IOMMU (`route`), MSI-X left off until the guest enables it.
    pub fn set_up(
        iommu: &mut IommuSystem,
        route: Route,
        cfg: ConfigSpace,
        bar_base: u64,
        bar_size: u64,
    ) -> Result<Msix, MsixError> {
        let cap = cfg.find_capability(CAP_MSIX).ok_or(MsixError::Absent)?;
        let control = (cfg.read32(cap) >> 16) as u16;
        let physical_size = (control & CTL_TABLE_SIZE) + 1;
        let table_dword = cfg.read32(cap + 4);
        let pba_dword = cfg.read32(cap + 8);
        let (table_bir, table_offset) = ((table_dword & 7) as u8, u64::from(table_dword & !7));
        let (pba_bir, pba_offset) = ((pba_dword & 7) as u8, u64::from(pba_dword & !7));
        let table_end = table_offset + u64::from(physical_size) * ENTRY_BYTES;
        let pba_end = pba_offset + u64::from(physical_size).div_ceil(64) * 8;
        if table_bir != 0 || pba_bir != 0 || table_end > bar_size || pba_end > bar_size {
            return Err(MsixError::Placement {
                table: (table_bir, table_offset),
                pba: (pba_bir, pba_offset),
            });
        }
        // Off while the hypervisor sets it up: function masked, MSI-X disabled.
        cfg.write16(cap + 2, control & !CTL_ENABLE | CTL_FUNCTION_MASK);
        // The pages of the table and of the PBA: one range when they overlap or touch.
        let page = |(s, e): (u64, u64)| (s & !(PAGE - 1), e.next_multiple_of(PAGE));
        let (a, b) = (page((table_offset, table_end)), page((pba_offset, pba_end)));
        let ranges = if a.0 <= b.1 && b.0 <= a.1 {
            [Some((a.0.min(b.0), a.1.max(b.1))), None]
        } else {
            [Some(a), Some(b)]
        };
        let mut trapped: Vec<Trapped> = Vec::new();
        for (start, end) in ranges.into_iter().flatten() {
            let window = MmioWindow::map(bar_base + start, (end - start) as usize)
                .map_err(MsixError::Mmio)?;
            trapped.push(Trapped { bar_offset: start, window });
        }
        let mut m = Msix {
            cfg,
            cap,
            physical_size,
            table_dword,
            pba_dword,
            table_offset,
            pba_offset,
            entries: Vec::new(),
            trapped,
            routing: None,
            enabled: false,
            function_mask: false,
            injected: 0,
            dropped: 0,
        };
        for i in 0..physical_size {
            m.write_physical(i, 12, ENTRY_MASKED);
        }
        let mut routing = iommu.open_interrupts(route).map_err(MsixError::Route)?;
        for i in 0..physical_size.min(MAX_ENTRIES) {
            let Some(host) = HostVector::claim() else { break };
            match iommu.route_message(&mut routing, i, host.vector()) {
                Ok((address, data)) => {
                    m.write_physical(i, 0, address as u32);
                    m.write_physical(i, 4, (address >> 32) as u32);
                    m.write_physical(i, 8, u32::from(data));
                    m.entries.push(Entry { address: 0, data: 0, masked: true, host, live: false });
                }
                Err(e) => {
                    host.release();
                    m.routing = Some(routing);
                    m.release(iommu);
                    return Err(MsixError::Route(e));
                }
            }
        }
        m.routing = Some(routing);
        if m.entries.is_empty() {
            m.release(iommu);
            return Err(MsixError::NoVector);
        }
        Ok(m)
    }

    /// [`Msix::set_up`] for assigned function `f` of partition `partition`, logged: what
    /// was found and routed, or why the guest gets no MSI-X.
    pub fn for_guest(
        iommu: &mut IommuSystem,
        route: Route,
        f: &crate::pci::PciFunction,
        partition: &str,
    ) -> Option<Msix> {
        let (base, size) = f.memory_bar(0)?;
        match Msix::set_up(iommu, route, f.config(), base, size) {
            Ok(m) => {
                let vectors: Vec<u8> = m.host_vectors().collect();
                log::info!(
                    "partition {partition}: {}: MSI-X table size {} found, {} entries shown to the guest, routed to host vectors {vectors:?}",
                    f.bdf,
                    m.physical_size(),
                    m.size()
                );
                Some(m)
            }
            Err(e) => {
                log::warn!("partition {partition}: {}: no MSI-X for the guest: {e}", f.bdf);
                None
            }
        }
    }

    /// Entries the guest is shown (each routed).
    pub fn size(&self) -> u16 {
        self.entries.len() as u16
    }

    /// The physical table's size.
    pub fn physical_size(&self) -> u16 {
        self.physical_size
    }

    /// The host vectors of the routed entries, in entry order.
    pub fn host_vectors(&self) -> impl Iterator<Item = u8> + '_ {
        self.entries.iter().map(|e| e.host.vector())
    }

    /// Interrupts taken at this function's host vectors.
    pub fn taken(&self) -> u64 {
        self.entries.iter().map(|e| e.host.taken()).sum()
    }

    /// BAR-relative page-aligned ranges the nested map must leave out (trapped).
    pub fn trapped_ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.trapped.iter().map(|t| (t.bar_offset, t.window_len()))
    }

    /// Whether BAR offset `offset` is in a trapped page.
    pub fn traps(&self, offset: u64) -> bool {
        self.trapped.iter().any(|t| (t.bar_offset..t.bar_offset + t.window_len()).contains(&offset))
    }

    /// The guest's view of capability dword `index` (0..3); `next` is the next
    /// capability's offset in the guest's list.
    pub fn config_read(&self, index: u16, next: u8) -> u32 {
        match index {
            0 => {
                let mut control = self.size() - 1;
                if self.function_mask {
                    control |= CTL_FUNCTION_MASK;
                }
                if self.enabled {
                    control |= CTL_ENABLE;
                }
                u32::from(CAP_MSIX) | u32::from(next) << 8 | u32::from(control) << 16
            }
            1 => self.table_dword,
            2 => self.pba_dword,
            _ => 0,
        }
    }

    /// The guest writes capability dword `index` (only the message control's enable and
    /// function mask are writable).
    pub fn config_write(&mut self, index: u16, value: u32) {
        if index != 0 {
            return;
        }
        let control = (value >> 16) as u16;
        self.enabled = control & CTL_ENABLE != 0;
        self.function_mask = control & CTL_FUNCTION_MASK != 0;
        let physical = (self.cfg.read32(self.cap) >> 16) as u16 & !(CTL_ENABLE | CTL_FUNCTION_MASK);
        let mut next = physical | CTL_FUNCTION_MASK;
        if self.enabled {
            next |= CTL_ENABLE;
        }
        // Enable first with the function masked, then each entry as the guest has it.
        self.cfg.write16(self.cap + 2, next);
        for i in 0..self.entries.len() {
            self.sync(i);
        }
        if self.enabled && !self.function_mask {
            self.cfg.write16(self.cap + 2, next & !CTL_FUNCTION_MASK);
        }
    }

    /// A guest read of `size` bytes at BAR offset `offset` (in a trapped page).
    pub fn read(&self, offset: u64, size: u8) -> u64 {
        if size == 8 && offset.is_multiple_of(8) {
            return self.read32(offset) as u64 | (self.read32(offset + 4) as u64) << 32;
        }
        let dword = self.read32(offset & !3);
        let shift = (offset & 3) * 8;
        (u64::from(dword) >> shift) & super::decode::mask(size.clamp(1, 4))
    }

    /// A guest write of `size` bytes of `value` at BAR offset `offset`.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        if size == 8 && offset.is_multiple_of(8) {
            self.write32(offset, value as u32);
            self.write32(offset + 4, (value >> 32) as u32);
            return;
        }
        let aligned = offset & !3;
        let shift = (offset & 3) * 8;
        let width = u64::from(size.clamp(1, 4)) * 8;
        if shift + width > 32 {
            return;
        }
        let m = (((1u64 << width) - 1) << shift) as u32;
        let merged = (self.read32(aligned) & !m) | ((value << shift) as u32 & m);
        self.write32(aligned, merged);
    }

    fn in_table(&self, offset: u64) -> Option<(usize, u64)> {
        let rel = offset.checked_sub(self.table_offset)?;
        (rel < u64::from(self.physical_size) * ENTRY_BYTES)
            .then_some(((rel / ENTRY_BYTES) as usize, rel % ENTRY_BYTES))
    }

    fn in_pba(&self, offset: u64) -> bool {
        offset
            .checked_sub(self.pba_offset)
            .is_some_and(|rel| rel < u64::from(self.physical_size).div_ceil(64) * 8)
    }

    fn read32(&self, offset: u64) -> u32 {
        if let Some((i, field)) = self.in_table(offset) {
            let Some(e) = self.entries.get(i) else { return 0 };
            return match field {
                0 => e.address as u32,
                4 => (e.address >> 32) as u32,
                8 => e.data,
                _ => u32::from(e.masked),
            };
        }
        if self.in_pba(offset) {
            // The device's pending bits, of the entries shown.
            let bit0 = (offset - self.pba_offset) * 8;
            let shown = u64::from(self.size());
            let keep = match shown.saturating_sub(bit0) {
                0 => 0,
                n if n >= 32 => u32::MAX,
                n => (1u32 << n) - 1,
            };
            return self.physical_read32(offset) & keep;
        }
        self.physical_read32(offset)
    }

    fn write32(&mut self, offset: u64, value: u32) {
        if let Some((i, field)) = self.in_table(offset) {
            let Some(e) = self.entries.get_mut(i) else { return };
            match field {
                0 => e.address = (e.address & !0xFFFF_FFFF) | u64::from(value),
                4 => e.address = (e.address & 0xFFFF_FFFF) | u64::from(value) << 32,
                8 => e.data = value,
                _ => e.masked = value & ENTRY_MASKED != 0,
            }
            self.sync(i);
            return;
        }
        if self.in_pba(offset) {
            return;
        }
        // Other registers sharing a trapped page: passed through.
        if let Some(t) = self.trapped.iter_mut().find(|t| t.contains(offset)) {
            t.window.write32((offset - t.bar_offset) as usize, value);
        }
    }

    fn physical_read32(&self, offset: u64) -> u32 {
        self.trapped
            .iter()
            .find(|t| t.contains(offset))
            .map_or(u32::MAX, |t| t.window.read32((offset - t.bar_offset) as usize))
    }

    /// Writes dword `field` of physical entry `i` (only the hypervisor's remapped messages
    /// and mask bits ever go there).
    fn write_physical(&mut self, i: u16, field: u64, value: u32) {
        let offset = self.table_offset + u64::from(i) * ENTRY_BYTES + field;
        if let Some(t) = self.trapped.iter_mut().find(|t| t.contains(offset)) {
            t.window.write32((offset - t.bar_offset) as usize, value);
        }
    }

    /// Brings physical entry `i`'s mask in line with the guest's view.
    fn sync(&mut self, i: usize) {
        let (enabled, function_mask) = (self.enabled, self.function_mask);
        let Some(e) = self.entries.get_mut(i) else { return };
        let live = enabled && !function_mask && !e.masked && e.guest_vector().is_some();
        if live != e.live {
            e.live = live;
            self.write_physical(i as u16, 12, if live { 0 } else { ENTRY_MASKED });
        }
    }

    /// Hands every pending interrupt of a live entry to `deliver` as the guest's vector
    /// (several arrivals since the last entry merge into one, as in an IRR). With MSI-X
    /// off they are dropped; a masked entry keeps them pending until it is unmasked.
    pub fn drain(&mut self, deliver: &mut dyn FnMut(u8)) {
        for e in &self.entries {
            if e.host.pending() == 0 {
                continue;
            }
            match (e.live, e.guest_vector()) {
                (true, Some(v)) => {
                    self.injected += e.host.take_pending();
                    deliver(v);
                }
                _ if !self.enabled => self.dropped += e.host.take_pending(),
                _ => {}
            }
        }
    }

    /// Turns the function's MSI-X off (every physical entry masked), removes its routing
    /// from the IOMMU and gives the host vectors back.
    pub fn release(&mut self, iommu: &mut IommuSystem) {
        let control = (self.cfg.read32(self.cap) >> 16) as u16;
        self.cfg.write16(self.cap + 2, control & !CTL_ENABLE | CTL_FUNCTION_MASK);
        for i in 0..self.physical_size {
            self.write_physical(i, 12, ENTRY_MASKED);
        }
        if let Some(r) = self.routing.take() {
            if let Err(e) = iommu.close_interrupts(r) {
                log::error!("msi-x: removing the routing failed: {e}");
            }
        }
        for e in self.entries.drain(..) {
            e.host.release();
        }
        self.enabled = false;
    }
}

impl Trapped {
    fn window_len(&self) -> u64 {
        self.window.len() as u64
    }

    fn contains(&self, offset: u64) -> bool {
        (self.bar_offset..self.bar_offset + self.window_len()).contains(&offset)
    }
}
