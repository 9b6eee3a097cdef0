//! The contract between the hypervisor and the guest program it runs: the guest-physical
//! layout, the boot page the hypervisor fills in, and the hypercall port the guest
//! reports through. Both sides use these items, so they cannot drift apart.
//!
//! Guest-physical layout (identity-mapped by the guest's own page tables, which the
//! hypervisor builds before the first instruction):
//!
//! | range | what |
//! | --- | --- |
//! | `0x1000-0x6fff` | guest page tables: PML4, PDPT, 4 PDs mapping 0-4 GiB with 2 MiB pages |
//! | `0x7000` | [`BootInfo`] page (RDI points at it on entry) |
//! | `0x8000-0xfffff` | stack (RSP starts just below 1 MiB) |
//! | `0x100000-` | the guest image (ELF PT_LOAD segments), below [`PROBE_START`] |
//! | [`PROBE_START`]`-memory` | free memory the guest probes and uses for DMA |
#![no_std]

pub mod attack;
pub mod hypercall;

/// Guest-physical address of the PML4; the PDPT and PDs follow page by page.
pub const PAGE_TABLES: u64 = 0x1000;
/// Guest-physical address of the boot page.
pub const BOOT_INFO: u64 = 0x7000;
/// Initial stack pointer (the stack grows down towards 0x8000).
pub const STACK_TOP: u64 = 0x10_0000;
/// Where the image is linked and loaded.
pub const LOAD_ADDRESS: u64 = 0x10_0000;
/// First byte after the image area: the guest's free memory starts here.
pub const PROBE_START: u64 = 0x20_0000;
/// The guest's identity map covers this much (device BARs must lie below it).
pub const IDENTITY_MAP_END: u64 = 4 << 30;

/// I/O port of the hypercall interface: `out dx, eax` with EAX = an [`op`] code,
/// RCX = first argument, RSI = second argument. `vmmcall` with the same registers is
/// handled identically.
pub const HYPERCALL_PORT: u16 = 0x500;

/// Hypercall operation codes (EAX).
pub mod op {
    /// The guest is finished; RCX = status (0 = everything it did worked).
    pub const DONE: u32 = 1;
    /// A result: RCX = a [`super::check`] id, RSI = the value.
    pub const REPORT: u32 = 2;
    /// A message: RCX = guest-physical address of UTF-8 text, RSI = its length (<= 256).
    pub const LOG: u32 = 3;
}

/// Ids of the results a guest reports with [`op::REPORT`].
pub mod check {
    /// Nonzero 64-bit words found in `[PROBE_START, memory)` before writing anything
    /// (0 for scrubbed memory).
    pub const NONZERO_WORDS: u64 = 1;
    /// Pages of `[PROBE_START, memory)` the guest stamped with [`super::page_stamp`].
    pub const PAGES_STAMPED: u64 = 2;
    /// The edu identification register, read through the passed-through BAR.
    pub const EDU_ID: u64 = 3;
    /// 1 when the edu liveness register returned the complement of what was written.
    pub const EDU_ALIVE: u64 = 4;
    /// Bytes that matched after edu copied a pattern within the guest's own memory.
    pub const DMA_OWN_MATCHED: u64 = 5;
    /// Nonzero bytes edu read from a guest-physical address beyond the guest's memory.
    pub const DMA_OUTSIDE_NONZERO: u64 = 6;
    /// An edu DMA did not finish within the guest's poll limit (value: which step).
    pub const DMA_TIMEOUT: u64 = 7;
    /// Nonzero bytes edu read from the other partition's host-physical range.
    pub const DMA_FOREIGN_NONZERO: u64 = 8;
    /// Nonzero bytes edu read from hypervisor memory.
    pub const DMA_HYPERVISOR_NONZERO: u64 = 9;
    /// [`super::scenario::DMA_ROUNDS`]: round number (high 32 bits) and bytes that
    /// matched in that round's own-memory copy (low 32 bits).
    pub const DMA_ROUND: u64 = 10;
    /// The assigned device is not an edu device: the value is its PCI id (vendor in the
    /// low 16 bits, device in the high), and the guest never touched its BAR.
    pub const DEVICE_REFUSED: u64 = 11;
    /// The device's configuration dword 0 (vendor, device) in the guest's view, read
    /// through the configuration ports 0xCF8/0xCFC.
    pub const CONFIG_ID: u64 = 12;
    /// Device interrupts the guest's handler took at [`super::IRQ_VECTOR`] during
    /// [`super::IRQ_DMAS`] DMAs that each asked for a completion interrupt.
    pub const IRQ_COUNT: u64 = 13;
    /// The vector the guest programmed into its device's MSI.
    pub const IRQ_VECTOR: u64 = 14;
    /// [`super::scenario::PLATFORM_TIMERS`]: PIT interrupts (IRQ 0 through the PIC and
    /// LINT0) the guest's handler took.
    pub const PIT_TICKS: u64 = 15;
    /// Local APIC timer interrupts the guest's handler took.
    pub const LAPIC_TICKS: u64 = 16;
    /// TSC cycles the guest waited for them with interrupts enabled.
    pub const WAIT_CYCLES: u64 = 17;
    /// The local APIC's current count, read twice in one-shot mode (first, then second:
    /// the second must be lower).
    pub const TMCCT_FIRST: u64 = 18;
    /// See [`TMCCT_FIRST`].
    pub const TMCCT_SECOND: u64 = 19;
    /// The PIC masks read back (master | slave << 8).
    pub const PIC_IMR: u64 = 20;
    /// Spurious interrupts taken (PIC IRQ 7, APIC spurious vector).
    pub const SPURIOUS: u64 = 21;
    /// [`super::scenario::PLATFORM_REDELIVERY`]: APIC timer interrupts the handler ran
    /// for (exactly 1 when the interrupted delivery was completed).
    pub const REDELIVERY_TICKS: u64 = 22;
    /// [`super::scenario::PLATFORM_REDELIVERY`]: the CS word of the interrupt frame
    /// found on [`super::DEMAND_PAGE`] (0x08 when the interrupt was delivered there).
    pub const REDELIVERY_FRAME_CS: u64 = 23;
}

/// The only device the built-in guest drives: QEMU's edu (vendor 1234, device 11e8), as
/// [`BootInfo::device_id`] encodes it.
pub const EDU_PCI_ID: u64 = 0x11e8_1234;

/// The vector the guest programs into its device's MSI (through its view of the
/// configuration space) and handles in its IDT.
pub const IRQ_VECTOR: u8 = 0x50;
/// DMAs the guest runs with a completion interrupt, counting the interrupts.
pub const IRQ_DMAS: u64 = 3;

/// What the guest should do (in [`BootInfo::scenario`]): the normal program, or one of
/// the misbehaviours the hypervisor's tests provoke.
pub mod scenario {
    /// Probe memory, use the edu device if given one, report, then [`super::op::DONE`].
    pub const NORMAL: u64 = 0;
    /// Execute HLT at once.
    pub const HALT: u64 = 1;
    /// Spin forever (the hypervisor's budget must stop it).
    pub const RUNAWAY: u64 = 2;
    /// Fault with no IDT: a triple fault, which the CPU turns into a shutdown.
    pub const TRIPLE_FAULT: u64 = 3;
    /// The normal program, but every hypercall made with the CPU's hypercall instruction
    /// (`vmmcall` on AMD, `vmcall` on Intel).
    pub const NORMAL_VMMCALL: u64 = 4;
    /// No memory probe: [`super::DMA_ROUNDS`] own-memory edu copies, each with its own
    /// pattern, each reported as [`super::check::DMA_ROUND`] (for a partition that keeps
    /// running while another is torn down).
    pub const DMA_ROUNDS: u64 = 5;
    /// The guest platform's timers: programs the PIC (IRQ 0 unmasked), the PIT (channel
    /// 0 periodic, [`super::PIT_COUNT`]) and the local APIC (LINT0 ExtINT, timer periodic
    /// at [`super::LAPIC_TIMER_VECTOR`], [`super::LAPIC_COUNT`] at divide 16) through the
    /// trapped xAPIC page, HLTs with interrupts on for [`super::PLATFORM_WAIT_MS`] of TSC,
    /// EOIs every interrupt and reports the counts.
    pub const PLATFORM_TIMERS: u64 = 6;
    /// The same with IRQ 0 and the APIC timer masked, spinning instead of halting: no
    /// interrupt may arrive.
    pub const PLATFORM_MASKED: u64 = 7;
    /// An access to the APIC page the MMIO decoder cannot emulate (`inc dword [TPR]`).
    pub const PLATFORM_UNDECODABLE: u64 = 8;
    /// [`PLATFORM_TIMERS`] spinning instead of halting: the guest never exits by itself,
    /// so only the host's timer gives the platform a chance to deliver.
    pub const PLATFORM_SPIN: u64 = 9;
    /// Interrupts on, no timer programmed, HLT forever: only the run's budget ends it.
    pub const PLATFORM_IDLE: u64 = 10;
    /// Interrupts off, [`super::PLATFORM_HOSTILE_ACCESSES`] random accesses to every
    /// platform port and local APIC register (8-, 16- and 32-bit), then DONE.
    pub const PLATFORM_HOSTILE: u64 = 11;
    /// One APIC timer interrupt (one-shot) taken on a stack at [`super::DEMAND_PAGE`],
    /// a page the hypervisor maps only on its first access: the interrupt's own delivery
    /// is that access. Spins with interrupts on for [`super::PLATFORM_WAIT_MS`] without
    /// touching the stack itself, then reports how often the handler ran.
    pub const PLATFORM_REDELIVERY: u64 = 12;
}

/// A guest-physical page outside any partition's RAM (above the device window, below the
/// local APIC) that the re-delivery test has the hypervisor map only when first touched.
pub const DEMAND_PAGE: u64 = 0xF000_0000;

/// Vector base the guest gives the master PIC (IRQ 0 = 0x20); the slave gets 0x28.
pub const PIC_VECTOR_BASE: u8 = 0x20;
/// The vector of the guest's local APIC timer.
pub const LAPIC_TIMER_VECTOR: u8 = 0x40;
/// PIT channel-0 count: 11932 input clocks, 10 ms.
pub const PIT_COUNT: u16 = 11932;
/// APIC timer initial count at divide-by-16: 5 ms at the 1 GHz timer clock.
pub const LAPIC_COUNT: u32 = 312_500;
/// Accesses [`scenario::PLATFORM_HOSTILE`] makes.
pub const PLATFORM_HOSTILE_ACCESSES: u64 = 3000;
/// How long the platform scenarios wait with interrupts enabled.
pub const PLATFORM_WAIT_MS: u64 = 200;

/// Copies [`scenario::DMA_ROUNDS`] makes.
pub const DMA_ROUNDS: u64 = 3;

/// [`BootInfo::magic`]: "GUESTBI1".
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"GUESTBI1");

/// The boot page at [`BOOT_INFO`], filled in by the hypervisor.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct BootInfo {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// Bytes of guest RAM, from guest-physical 0.
    pub memory_size: u64,
    /// A [`scenario`] code.
    pub scenario: u64,
    /// Guest-physical base of the assigned edu device's BAR0 (0: no device).
    pub edu_bar: u64,
    /// Its size in bytes.
    pub edu_bar_size: u64,
    /// 1 when the device's DMA is translated by an IOMMU and the guest may start DMA.
    pub dma_allowed: u64,
    /// A guest-physical address beyond the guest's memory to try DMA at.
    pub dma_outside: u64,
    /// The other partition's host-physical memory, tried as a DMA address (0: skip):
    /// edu writes there, then reads it back.
    pub dma_foreign: u64,
    /// A host-physical address of hypervisor memory, tried the same way (0: skip).
    pub dma_hypervisor: u64,
    /// The assigned device's PCI id: vendor (low 16 bits) | device (next 16 bits); 0
    /// without a device. The built-in guest touches the BAR only when it is
    /// [`EDU_PCI_ID`].
    pub device_id: u64,
    /// The TSC rate in Hz (0 when the host could not measure it).
    pub tsc_hz: u64,
    /// 1 when the partition has the emulated PC platform (PIC, PIT, local APIC at
    /// [`LAPIC_BASE`]).
    pub platform: u64,
}

/// Guest-physical address of the emulated local APIC's MMIO page.
pub const LAPIC_BASE: u64 = 0xFEE0_0000;

/// The word the guest writes at the start of each probed page: derived from the page's
/// guest-physical address so a page mapped at the wrong place is caught.
pub fn page_stamp(gpa: u64) -> u64 {
    gpa ^ 0x5a5a_0000_0000_a5a5
}

/// Guest-physical page the guest fills and has edu read (below [`PROBE_START`], so the
/// memory probe never overlaps it; the image must end below it).
pub const DMA_SOURCE: u64 = 0x1F_E000;
/// Guest-physical page edu writes back to.
pub const DMA_TARGET: u64 = 0x1F_F000;
/// Bytes each guest edu DMA moves.
pub const DMA_LEN: u64 = 2048;

/// The byte the guest's own-memory copy puts at offset `i` in round `round` (never 0,
/// so a copy that did not happen cannot pass).
pub fn dma_pattern(round: u64, i: u64) -> u8 {
    (i as u8).wrapping_mul(7).wrapping_add(round as u8) | 1
}

/// A [`check`] id's name, for logs.
pub fn check_name(id: u64) -> &'static str {
    match id {
        check::NONZERO_WORDS => "nonzero_words",
        check::PAGES_STAMPED => "pages_stamped",
        check::EDU_ID => "edu_id",
        check::EDU_ALIVE => "edu_alive",
        check::DMA_OWN_MATCHED => "dma_own_matched",
        check::DMA_OUTSIDE_NONZERO => "dma_outside_nonzero",
        check::DMA_TIMEOUT => "dma_timeout",
        check::DMA_FOREIGN_NONZERO => "dma_foreign_nonzero",
        check::DMA_HYPERVISOR_NONZERO => "dma_hypervisor_nonzero",
        check::DMA_ROUND => "dma_round",
        check::DEVICE_REFUSED => "device_refused",
        check::CONFIG_ID => "config_id",
        check::IRQ_COUNT => "irq_count",
        check::IRQ_VECTOR => "irq_vector",
        check::PIT_TICKS => "pit_ticks",
        check::LAPIC_TICKS => "lapic_ticks",
        check::WAIT_CYCLES => "wait_cycles",
        check::TMCCT_FIRST => "tmcct_first",
        check::TMCCT_SECOND => "tmcct_second",
        check::PIC_IMR => "pic_imr",
        check::SPURIOUS => "spurious",
        check::REDELIVERY_TICKS => "redelivery_ticks",
        check::REDELIVERY_FRAME_CS => "redelivery_frame_cs",
        _ => "unknown",
    }
}
