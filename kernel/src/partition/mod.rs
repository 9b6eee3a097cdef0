//! Guest partitions: memory carved from host RAM, nested page tables, one virtual CPU
//! behind [`vcpu::VcpuBackend`] (SVM or VMX, chosen from CPUID: [`backend`]), a guest image, and the lifecycle
//! create -> attach devices -> run -> stop -> destroy. Device assignment goes through the
//! IOMMU ([`Partition::attach_device`], [`dma`]); destroy detaches and unmaps before any
//! memory is scrubbed or returned ([`Partition::destroy_in`]).

pub mod backend;
pub mod config;
pub mod demand;
pub mod dma;
pub mod image;
pub mod intercept;
pub mod interrupts;
pub mod isolation;
mod lifecycle;
pub mod linux;
pub use lifecycle::TeardownReport;
pub mod memory;
pub mod npt;
pub mod platform;
pub mod reset;
pub mod story;
pub mod svm;
mod svm_enable;
pub mod svm_exit;
mod svm_vmrun;
pub mod vcpu;
pub mod vmcb;
pub mod vmx;
pub mod world;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use boot::partition_config::PartitionSpec;
use core::fmt;
use memory::GuestMemory;
use npt::NestedTables;
use vcpu::VcpuBackend;

/// Why a partition could not be created or run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionError {
    /// Not enough free host memory for the partition.
    OutOfMemory {
        /// Bytes asked for.
        wanted: u64,
    },
    /// The nested tables refused a mapping.
    Npt(npt::NptError),
    /// The virtualization extension is missing or failed.
    Svm(svm::SvmError),
    /// VMX is missing or failed.
    Vmx(vmx::VmxError),
    /// The CPU has neither SVM nor VMX.
    NoVirtualization,
    /// The guest image could not be loaded.
    Image(image::ImageError),
    /// The guest's boot structures did not fit its memory.
    TooSmall,
    /// The partition was stopped and cannot run again.
    Stopped,
    /// The device to assign has no memory BAR0.
    NoBar,
    /// Setting up, extending or tearing down the partition's DMA space failed.
    Dma(dma::DmaError),
    /// The device's IOMMU unit does not remap interrupts (policy refusal).
    InterruptsNotIsolated(crate::iommu::InterruptsNotIsolated),
    /// Removing the device's interrupt routing at teardown failed.
    Interrupts(crate::iommu::RouteError),
    /// The device could not be reset after another partition owned it.
    DeviceNotReset(reset::NotReset),
    /// Devices are assigned, but the IOMMU was not given to detach them from.
    IommuNotGiven,
    /// The tracker released less (or more) memory than the partition had.
    ReleaseMismatch {
        /// Bytes released.
        released: u64,
        /// Bytes of guest memory.
        size: u64,
    },
    /// The guest platform (`platform pc`) could not be set up.
    Platform(platform::PlatformError),
    /// The Linux guest could not be loaded.
    Linux(linux::LoadError),
}

impl fmt::Display for PartitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionError::OutOfMemory { wanted } => {
                write!(f, "not enough free host memory for {} MiB", wanted >> 20)
            }
            PartitionError::Npt(e) => write!(f, "nested paging: {e}"),
            PartitionError::Svm(e) => write!(f, "SVM: {e}"),
            PartitionError::Vmx(e) => write!(f, "VMX: {e}"),
            PartitionError::NoVirtualization => {
                f.write_str("the CPU has neither AMD SVM nor Intel VMX")
            }
            PartitionError::Image(e) => write!(f, "{e}"),
            PartitionError::TooSmall => {
                f.write_str("memory too small for the guest's boot structures")
            }
            PartitionError::Stopped => f.write_str("the partition was stopped"),
            PartitionError::NoBar => f.write_str("the device has no memory BAR0 to pass through"),
            PartitionError::Platform(e) => write!(f, "guest platform: {e}"),
            PartitionError::Dma(e) => write!(f, "IOMMU: {e}"),
            PartitionError::InterruptsNotIsolated(e) => write!(f, "{e}"),
            PartitionError::Interrupts(e) => write!(f, "device interrupts: {e}"),
            PartitionError::DeviceNotReset(e) => write!(f, "{e}"),
            PartitionError::IommuNotGiven => {
                f.write_str("devices are assigned, but the IOMMU was not given to detach them from")
            }
            PartitionError::ReleaseMismatch { released, size } => {
                write!(f, "the DMA tracker released {released:#x} of {size:#x} bytes")
            }
            PartitionError::Linux(e) => write!(f, "{e}"),
        }
    }
}

impl From<npt::NptError> for PartitionError {
    fn from(e: npt::NptError) -> Self {
        PartitionError::Npt(e)
    }
}

impl From<dma::DmaError> for PartitionError {
    fn from(e: dma::DmaError) -> Self {
        PartitionError::Dma(e)
    }
}

/// The in-kernel tests and the narrative code report failures as text: the error becomes
/// its words there, where it is printed.
impl From<PartitionError> for String {
    fn from(e: PartitionError) -> String {
        alloc::string::ToString::to_string(&e)
    }
}

/// How long a run may take before the guest is stopped.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Host timer ticks (about 1.6 ms each under QEMU).
    pub ticks: u64,
    /// VM exits.
    pub exits: u64,
}

impl Budget {
    /// Enough for the guest program's normal work on a small partition.
    pub const DEFAULT: Budget = Budget { ticks: 3_000, exits: 1_000_000 };
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The guest reported `DONE` with this status (0 = all its checks passed).
    Done(u64),
    /// The guest executed HLT.
    Halted,
    /// The guest triple-faulted.
    Shutdown,
    /// The budget ran out (a runaway guest).
    BudgetExhausted,
    /// An intercepted guest exception.
    Exception {
        /// Vector.
        vector: u8,
        /// Where.
        rip: u64,
    },
    /// A guest-physical access outside the nested mappings.
    NestedPageFault {
        /// The address.
        gpa: u64,
        /// Where.
        rip: u64,
    },
    /// I/O to a port that is not the hypercall port, or an unsupported form.
    UnhandledIo {
        /// The port.
        port: u16,
        /// Where.
        rip: u64,
    },
    /// An unknown hypercall or an MSR access.
    Unsupported {
        /// Where.
        rip: u64,
    },
    /// The hardware refused the guest state.
    InvalidState,
    /// The guest executed an instruction partitions may not (see `intercept.rs`).
    Refused {
        /// What, in words.
        instruction: &'static str,
        /// Where.
        rip: u64,
    },
    /// A machine check arrived while the guest ran (handed to the host's handler).
    MachineCheck {
        /// The guest's RIP.
        rip: u64,
    },
    /// An access to the emulated local APIC's page that the MMIO decoder refused.
    MmioRefused {
        /// The guest-physical address accessed.
        gpa: u64,
        /// Where.
        rip: u64,
        /// Why.
        error: platform::decode::DecodeError,
    },
    /// An exit the run loop does not know.
    UnknownExit(u64),
}

/// What one run did.
#[derive(Debug, Clone, Copy)]
pub struct RunReport {
    /// Why it ended.
    pub stop: Stop,
    /// VM exits taken.
    pub exits: u64,
    /// Host timer ticks spent.
    pub ticks: u64,
    /// Hypercalls served.
    pub hypercalls: u64,
    /// Intercepted instructions the host emulated (CPUID, XSETBV, WBINVD, INVD).
    pub emulated: u64,
}

/// Where a partition is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Created and loaded; not yet run.
    Ready,
    /// Has run and may run again (the last run ended in a host interrupt budget only).
    Paused,
    /// Stopped for good: it may only be destroyed.
    Stopped,
}

/// The edu BAR a guest is told about in its boot page.
#[derive(Debug, Clone, Copy)]
pub struct GuestDevice {
    /// Guest-physical base of BAR0.
    pub bar_gpa: u64,
    /// Its size.
    pub bar_size: u64,
    /// Whether the guest may start DMA (only once an IOMMU translates the device).
    pub dma_allowed: bool,
    /// Its PCI id, vendor | device << 16 (the guest checks it before touching the BAR).
    pub pci_id: u64,
}

/// Addresses the guest tries as DMA targets to prove isolation (0: not tried); the
/// hypervisor fills them in for tests and the demo.
#[derive(Debug, Clone, Copy, Default)]
pub struct IsolationProbes {
    /// Host-physical address inside another partition's memory.
    pub foreign: u64,
    /// Host-physical address of hypervisor memory.
    pub hypervisor: u64,
}

/// A guest partition.
pub struct Partition {
    /// Its name (from the configuration).
    pub name: String,
    memory: Option<GuestMemory>,
    npt: Option<NestedTables>,
    vcpu: Option<Box<dyn VcpuBackend>>,
    entry: u64,
    state: State,
    /// The boot-page scenario (tests provoke misbehaviour through it).
    pub scenario: u64,
    /// The device the guest is told about, if any.
    pub device: Option<GuestDevice>,
    /// `(check, value)` pairs the guest reported, in order.
    pub reports: Vec<(u64, u64)>,
    /// Messages the guest logged.
    pub messages: Vec<String>,
    /// PCI functions assigned to this partition (BAR passed through).
    pub devices: Vec<crate::pci::Bdf>,
    /// Where the next assigned BAR goes (from [`DEVICE_WINDOW`], 1 MiB-aligned).
    next_device_gpa: u64,
    /// The IOMMU side of assigned devices (`None` until the first attach).
    dma: Option<dma::PartitionDma>,
    /// Forbidden DMA targets the guest is told to try.
    pub isolation: IsolationProbes,
    /// `unreset-devices allow`: it may be given a device another partition left without
    /// a reset ([`reset::may_assign`]).
    pub accept_unreset: bool,
    /// It runs the hypervisor's own guest program ([`BUILTIN_GUEST`]): only such a guest
    /// is ever told host-physical addresses ([`IsolationProbes`], for the isolation story
    /// and tests); a guest image from the configuration never is.
    pub builtin_image: bool,
    /// The first assigned device's interrupt: the guest's view of its configuration
    /// space and the host routing (see [`interrupts`]).
    pub interrupt: Option<interrupts::DeviceInterrupt>,
    /// The emulated PC platform (`platform pc`): PIC, PIT, local APIC; `None` for a
    /// partition without one (every other port and MMIO access stops it).
    pub platform: Option<platform::GuestPlatform>,
    /// A Linux guest's platform (`None` for every other guest): see [`linux`].
    linux: Option<linux::LinuxPlatform>,
    /// A page outside RAM mapped on the guest's first access (tests: [`demand`]);
    /// declared after `npt` so the tables are dropped before its frame.
    demand: Option<demand::DemandPage>,
}

/// Guest-physical base where assigned devices' BARs appear (3 GiB: above the largest
/// partition's RAM, inside the guest's 4 GiB identity map).
pub const DEVICE_WINDOW: u64 = 0xC000_0000;

// Guest RAM is mapped in the partition's IOMMU domain at IOVA = guest-physical, from 0 up
// to at most MAX_MEMORY: it must end below the IOVA windows no domain maps (the interrupt
// window first), which `Domain::map` refuses anyway.
const _: () = assert!(boot::partition_config::MAX_MEMORY <= iommu::domain::RESERVED_IOVA[0].0);
const _: () = assert!(boot::partition_config::MAX_MEMORY <= DEVICE_WINDOW);

impl Partition {
    /// Creates a partition from its configuration: fresh zeroed memory, nested tables,
    /// the guest image and page tables, a vCPU. All or nothing.
    pub fn create(spec: &PartitionSpec<'_>, image: &[u8]) -> Result<Partition, PartitionError> {
        let mem = GuestMemory::allocate(spec.memory, spec.backing)
            .ok_or(PartitionError::OutOfMemory { wanted: spec.memory })?;
        let mut p = Self::create_in(spec.name, mem, image)?;
        if spec.platform == boot::partition_config::GuestPlatformKind::Pc {
            p.enable_platform()?;
        }
        Ok(p)
    }

    /// Gives the partition the emulated PC platform ([`platform::GuestPlatform`]) in its
    /// power-on state, timed by the host TSC. Before its first run only.
    pub fn enable_platform(&mut self) -> Result<(), PartitionError> {
        if self.state != State::Ready {
            return Err(PartitionError::Stopped);
        }
        self.platform = Some(platform::GuestPlatform::on_host().map_err(PartitionError::Platform)?);
        Ok(())
    }

    /// Creates a partition in memory handed back by [`Partition::destroy_keeping_memory`]
    /// (scrubbed), or freshly allocated.
    pub fn create_in(
        name: &str,
        mut mem: GuestMemory,
        image: &[u8],
    ) -> Result<Partition, PartitionError> {
        if mem.size() < guest::PROBE_START {
            return Err(PartitionError::TooSmall);
        }
        let entry = image::load_elf(image, &mut mem).map_err(PartitionError::Image)?;
        let builtin = core::ptr::eq(image, BUILTIN_GUEST);
        Self::assemble(name, mem, entry, builtin, None)
    }

    /// Creates a partition running a Linux guest (`image linux:NAME`): fresh zeroed
    /// memory, the kernel, initramfs and command line loaded through the 64-bit boot
    /// protocol ([`linux::load`]), its platform (a console UART), and a vCPU that leaves
    /// the guest its exceptions (only the forced ones, #DB, #AC and #MC, stay
    /// intercepted: `svm::ALWAYS_INTERCEPTED`).
    pub fn create_linux(
        spec: &PartitionSpec<'_>,
        source: linux::LinuxSource,
    ) -> Result<Partition, PartitionError> {
        let mem = GuestMemory::allocate(spec.memory, spec.backing)
            .ok_or(PartitionError::OutOfMemory { wanted: spec.memory })?;
        Self::create_linux_in(spec.name, mem, source)
    }

    /// As [`Partition::create_linux`], in memory handed back by
    /// [`Partition::destroy_keeping_memory_in`] (scrubbed): how a Linux partition is
    /// re-created.
    pub fn create_linux_in(
        name: &str,
        mut mem: GuestMemory,
        source: linux::LinuxSource,
    ) -> Result<Partition, PartitionError> {
        let entry = linux::load(&source.image(), &mut mem).map_err(PartitionError::Linux)?;
        let platform = linux::LinuxPlatform::new(name, source);
        let mut p = Self::assemble(name, mem, entry, false, Some(platform))?;
        p.set_exception_intercepts(0);
        // Linux insists on a PC's interrupt controllers and timers: the 8259 pair, the
        // 8254 and the local APIC come from the guest platform, the UART and PCI
        // configuration space from the Linux platform.
        p.enable_platform()?;
        Ok(p)
    }

    /// The rest of creation once the image is in `mem`: the guest's identity map, nested
    /// tables, a vCPU.
    fn assemble(
        name: &str,
        mut mem: GuestMemory,
        entry: u64,
        builtin: bool,
        linux: Option<linux::LinuxPlatform>,
    ) -> Result<Partition, PartitionError> {
        if !image::build_identity_map(&mut mem) {
            return Err(PartitionError::TooSmall);
        }
        let b = backend::enable()?;
        let mut tables = backend::nested_tables(b)?;
        tables.map_memory(&mem)?;
        let vcpu = backend::new_vcpu(b, &tables)?;
        Ok(Partition {
            name: name.into(),
            memory: Some(mem),
            npt: Some(tables),
            vcpu: Some(vcpu),
            entry,
            state: State::Ready,
            scenario: guest::scenario::NORMAL,
            device: None,
            reports: Vec::new(),
            messages: Vec::new(),
            devices: Vec::new(),
            next_device_gpa: DEVICE_WINDOW,
            dma: None,
            isolation: IsolationProbes::default(),
            accept_unreset: false,
            builtin_image: builtin,
            interrupt: None,
            platform: None,
            linux,
            demand: None,
        })
    }

    /// Guest memory (for checks; `None` only during teardown).
    pub fn memory(&self) -> Option<&GuestMemory> {
        self.memory.as_ref()
    }

    /// The nested page tables.
    pub fn nested_tables(&self) -> Option<&NestedTables> {
        self.npt.as_ref()
    }

    /// The vCPU backend's name ("SVM").
    pub fn backend_name(&self) -> &'static str {
        self.vcpu.as_ref().map_or("no", |v| v.name())
    }

    /// Where the partition is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// MMIO passthrough: maps `[host_phys, +size)` (a device BAR) uncached at
    /// `guest_phys` in the nested tables, so the guest drives the device's registers
    /// itself. The BAR must not overlap guest RAM and must lie inside the guest's
    /// identity map (below 4 GiB).
    pub fn map_device_bar(
        &mut self,
        guest_phys: u64,
        host_phys: u64,
        size: u64,
    ) -> Result<(), PartitionError> {
        let ram = self.memory.as_ref().map_or(0, |m| m.size());
        let end = guest_phys.checked_add(size).ok_or(npt::NptError::Misaligned(guest_phys))?;
        if guest_phys < ram || end > guest::IDENTITY_MAP_END {
            return Err(npt::NptError::AlreadyMapped(guest_phys).into());
        }
        let npt = self.npt.as_mut().ok_or(PartitionError::Stopped)?;
        npt.map_device(guest_phys, host_phys, size)?;
        if let Some(v) = self.vcpu.as_mut() {
            v.nested_tables_changed();
        }
        Ok(())
    }

    /// Adds a page at `gpa` (outside RAM, inside the identity map, unmapped) that the
    /// nested tables map only when the guest first touches it ([`demand::DemandPage`]).
    pub fn add_demand_page(&mut self, gpa: u64) -> Result<(), PartitionError> {
        let npt = self.npt.as_ref().ok_or(PartitionError::Stopped)?;
        self.demand = Some(demand::DemandPage::new(gpa, npt)?);
        Ok(())
    }

    /// The demand page's counts, if the partition has one.
    pub fn demand_page(&self) -> Option<&demand::DemandPage> {
        self.demand.as_ref()
    }

    /// Gives the partition a PCI function's BAR0: maps it uncached at
    /// [`DEVICE_WINDOW`] + `slot` MiB-aligned slots in the nested tables, records the
    /// function and tells the guest (boot page) where it is. DMA stays off for the guest
    /// (`dma_allowed = false`) until an IOMMU translates the device:
    /// [`Partition::attach_device`] does that, then calls this and sets `dma_allowed`.
    pub fn assign_device(&mut self, f: &crate::pci::PciFunction) -> Result<u64, PartitionError> {
        self.assign_device_trapping(f, &[])
    }

    /// As [`Partition::assign_device`], leaving the BAR-relative page ranges `trapped`
    /// (offset, length; page-aligned) out of the nested map: the guest's accesses there
    /// fault and are emulated (an MSI-X table and PBA).
    fn assign_device_trapping(
        &mut self,
        f: &crate::pci::PciFunction,
        trapped: &[(u64, u64)],
    ) -> Result<u64, PartitionError> {
        let (base, size) = f.memory_bar(0).ok_or(PartitionError::NoBar)?;
        let gpa = self.next_device_gpa;
        let mut at = 0;
        let mut holes: Vec<(u64, u64)> = trapped.to_vec();
        holes.sort_unstable();
        for (start, len) in holes.into_iter().chain(core::iter::once((size, 0))) {
            let start = start.min(size);
            if start > at {
                self.map_device_bar(gpa + at, base + at, start - at)?;
            }
            at = at.max(start + len);
        }
        self.next_device_gpa += size.next_multiple_of(1 << 20).max(1 << 20);
        self.devices.push(f.bdf);
        if self.device.is_none() {
            self.device = Some(GuestDevice {
                bar_gpa: gpa,
                bar_size: size,
                dma_allowed: false,
                pci_id: f.vendor as u64 | (f.device as u64) << 16,
            });
        }
        Ok(gpa)
    }

    /// Device assignment through the IOMMU: attaches `f` (reaching its unit as `route`)
    /// to the partition's domain, with the whole guest RAM mapped guest-physical ->
    /// host-physical through the partition's DMA tracker (on first use), passes BAR0
    /// through, and only then lets the guest start DMA.
    pub fn attach_device(
        &mut self,
        iommu: &mut crate::iommu::IommuSystem,
        f: &crate::pci::PciFunction,
        route: crate::iommu::Route,
    ) -> Result<iommu::invalidate::DomainId, PartitionError> {
        // A device whose unit does not remap interrupts could forge any host interrupt.
        iommu.interrupt_isolation(route.unit).map_err(PartitionError::InterruptsNotIsolated)?;
        reset::may_assign(f.bdf, &self.name, self.accept_unreset)
            .map_err(PartitionError::DeviceNotReset)?;
        if self.dma.is_none() {
            let extents = self.memory.as_ref().ok_or(PartitionError::Stopped)?.host_extents();
            let mut dma = dma::PartitionDma::new(iommu, Default::default())?;
            if let Err(e) = dma.map_memory(iommu, &extents) {
                // Nothing attached yet: the records go and no page was ever translated.
                let _ = dma.teardown(iommu, &mut |_| {});
                return Err(e.into());
            }
            self.dma = Some(dma);
        }
        let dma = self.dma.as_mut().ok_or(PartitionError::Stopped)?;
        let id = dma.attach(iommu, f, route)?;
        if self.interrupt.is_none() {
            self.route_device_interrupt(iommu, f, route)?;
        } else {
            // One interrupting device per partition (docs/partitions.md): this one's MSI
            // stays off and its every message keeps being refused by the IOMMU.
            log::warn!(
                "partition {}: {}: interrupts stay off: only the partition's first device \
                 gets its interrupts routed (its MSI is never enabled; the IOMMU refuses its \
                 messages)",
                self.name,
                f.bdf
            );
        }
        // A Linux guest gets the device's MSI-X: its table and PBA pages trapped.
        let msix = match self.linux.is_some() {
            true => platform::msix::Msix::for_guest(iommu, route, f, &self.name),
            false => None,
        };
        let trapped: Vec<(u64, u64)> =
            msix.as_ref().map_or(Vec::new(), |m| m.trapped_ranges().collect());
        let gpa = match self.assign_device_trapping(f, &trapped) {
            Ok(gpa) => gpa,
            Err(e) => {
                if let Some(mut m) = msix {
                    m.release(iommu);
                }
                return Err(e);
            }
        };
        if let (Some(l), Some((_, size))) = (self.linux.as_mut(), f.memory_bar(0)) {
            // A Linux guest finds the device in its configuration space (00:01.0, ...).
            let mut msix = msix;
            match l.pci.assign(f.config(), gpa, size, &mut msix) {
                Some(dev) => {
                    log::info!("partition {}: {} is 00:{dev:02x}.0 in the guest", self.name, f.bdf)
                }
                None => {
                    log::warn!(
                        "partition {}: {}: not shown: no free device number",
                        self.name,
                        f.bdf
                    );
                    if let Some(mut m) = msix {
                        m.release(iommu);
                    }
                }
            }
        }
        if let Some(d) = self.device.as_mut() {
            d.dma_allowed = true;
        }
        Ok(id)
    }

    /// Routes `f`'s MSI to a host vector of this partition's (through the IOMMU) and gives
    /// the guest its trapped view of the device's configuration space.
    fn route_device_interrupt(
        &mut self,
        iommu: &mut crate::iommu::IommuSystem,
        f: &crate::pci::PciFunction,
        route: crate::iommu::Route,
    ) -> Result<(), PartitionError> {
        let Some((mut d, vector)) = interrupts::DeviceInterrupt::claim(f.config()) else {
            log::warn!(
                "partition {}: {}: no MSI capability (or no free host vector): its MSI stays off",
                self.name,
                f.bdf
            );
            return Ok(());
        };
        match iommu.route_interrupt(route, vector) {
            Ok(routed) => {
                log::info!(
                    "partition {}: {} MSI routed to host vector {vector} (message {:#x}/{:#x}), off until the guest enables it",
                    self.name, f.bdf, routed.address, routed.data
                );
                d.install(routed);
                self.interrupt = Some(d);
                Ok(())
            }
            Err(e) => {
                // Only reachable where allow-unsafe-interrupts let a unit without
                // remapping through: the device works, its interrupts stay off.
                d.release();
                log::warn!("partition {}: {}: interrupts stay off: {e}", self.name, f.bdf);
                Ok(())
            }
        }
    }

    /// The partition's IOMMU state, if a device was attached.
    pub fn dma(&self) -> Option<&dma::PartitionDma> {
        self.dma.as_ref()
    }

    /// Which guest exceptions stop the guest (default: all).
    pub fn set_exception_intercepts(&mut self, vectors: u32) {
        if let Some(v) = self.vcpu.as_mut() {
            v.set_exception_intercepts(vectors);
        }
    }

    fn boot_info(&self) -> guest::BootInfo {
        let size = self.memory.as_ref().map_or(0, |m| m.size());
        let dev = self.device;
        guest::BootInfo {
            magic: guest::BOOT_MAGIC,
            memory_size: size,
            scenario: self.scenario,
            edu_bar: dev.map_or(0, |d| d.bar_gpa),
            edu_bar_size: dev.map_or(0, |d| d.bar_size),
            dma_allowed: dev.is_some_and(|d| d.dma_allowed) as u64,
            // 1 MiB past the end of RAM: the nearest address the partition does not own.
            dma_outside: size + (1 << 20),
            // Host-physical addresses go only to the hypervisor's own program.
            dma_foreign: if self.builtin_image { self.isolation.foreign } else { 0 },
            dma_hypervisor: if self.builtin_image { self.isolation.hypervisor } else { 0 },
            device_id: dev.map_or(0, |d| d.pci_id),
            tsc_hz: crate::console::tsc_hz(),
            platform: self.platform.is_some() as u64,
        }
    }

    /// The last value the guest reported for `check`.
    pub fn reported(&self, check: u64) -> Option<u64> {
        self.reports.iter().rev().find(|(c, _)| *c == check).map(|(_, v)| *v)
    }
}

/// The time-stamp counter, for cost reports.
pub fn cycles() -> u64 {
    crate::arch::tsc()
}

/// The guest program built into the hypervisor (`GUEST_ELF` at build time; empty when
/// the kernel was built without xtask).
pub static BUILTIN_GUEST: &[u8] = include_bytes!(env!("GUEST_ELF"));
