//! Linux guests: an unmodified bzImage started through the 64-bit boot protocol
//! (`boot::linux_boot` reads and checks the image and builds the zero page), its
//! initramfs and command line, and what the vCPU does for such a guest: exceptions are
//! the guest's own, its MSRs are emulated ([`msr`]), its I/O ports reach the guest
//! platform (a 16550 UART at 0x3F8; what no device claims reads all ones and drops
//! writes). docs/linux-guest.md has the layout and the reasons.
//!
//! The bzImage rather than the uncompressed vmlinux: it is the file Debian ships, loaded
//! as it is, and its decompressor (about 6 s of QEMU TCG time, measured outside the
//! hypervisor) runs in the guest without a single exit but its own page faults, which
//! the guest handles itself.

pub mod msr;

use super::memory::GuestMemory;
use super::platform::delivery::set_in_result;
use super::platform::pci::PciHost;
use super::platform::uart::{self, Uart16550, COM1};
use super::platform::PortDevice;
use super::vcpu::{Reg, VmExit};
use super::{Budget, Partition, PartitionError, RunReport, Stop};
use alloc::format;
use alloc::string::String;
use boot::linux_boot::{self, BootData, LinuxError};
use core::fmt;

/// Guest-physical address of the zero page (`boot_params`; RSI at entry).
pub const ZERO_PAGE: u64 = 0x7000;
/// The boot GDT (null, null, 0x10 code, 0x18 data).
pub const GDT: u64 = 0x8000;
/// The command line (NUL-terminated, at most 2048 bytes).
pub const CMDLINE: u64 = 0x9000;
/// The least memory a Linux partition gets: measured for Debian 12's 6.1 kernel with a
/// busybox initramfs (80 MiB decompresses, then runs out of memory).
pub const MIN_MEMORY: u64 = 96 << 20;

/// The command line a Linux partition gets when its configuration names none (see
/// docs/linux-guest.md for each option); [`command_line`] adds the TSC rate.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 acpi=off noapic nokaslr no5lvl tsc=reliable mitigations=off reboot=t panic=-1";

/// The boot GDT's entries: null, unused, flat 64-bit code (0x10), flat data (0x18).
const GDT_ENTRIES: [u64; 4] = [0, 0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF];

/// A Linux guest to load: its kernel, initramfs (may be empty) and command line.
#[derive(Debug, Clone, Copy)]
pub struct LinuxImage<'a> {
    /// The bzImage.
    pub kernel: &'a [u8],
    /// The initramfs.
    pub initrd: &'a [u8],
    /// The command line.
    pub cmdline: &'a str,
}

/// Where a Linux partition's guest comes from: its boot modules and command line (kept
/// with the partition, so that it can be re-created).
#[derive(Debug, Clone)]
pub struct LinuxSource {
    /// The bzImage boot module.
    pub kernel: &'static [u8],
    /// The initramfs boot module (empty for none).
    pub initrd: &'static [u8],
    /// The command line ([`command_line`]).
    pub cmdline: String,
}

impl LinuxSource {
    /// What the loader takes.
    pub fn image(&self) -> LinuxImage<'_> {
        LinuxImage { kernel: self.kernel, initrd: self.initrd, cmdline: &self.cmdline }
    }
}

/// Why a Linux guest could not be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    /// The image (or its fit into the partition) was refused.
    Image(LinuxError),
    /// A write into guest memory failed (the layout left guest RAM).
    Memory(u64),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Image(e) => write!(f, "{e}"),
            LoadError::Memory(a) => write!(f, "Linux boot data at {a:#x} is not guest RAM"),
        }
    }
}

/// The command line as given (or [`DEFAULT_CMDLINE`]), with `tsc_early_khz=` added
/// from the host's measured TSC rate (`tsc_hz`, 0 = unknown) unless it names one: the
/// guest reads the host's TSC, and without HPET or PM timer Linux could not calibrate it.
pub fn command_line(configured: Option<&str>, tsc_hz: u64) -> String {
    let mut line = String::from(configured.unwrap_or(DEFAULT_CMDLINE));
    if tsc_hz != 0 && !line.split_whitespace().any(|w| w.starts_with("tsc_early_khz=")) {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&format!("tsc_early_khz={}", tsc_hz / 1000));
    }
    line
}

/// Checks a bzImage against a partition of `memory` bytes without loading it (the
/// configuration validation refuses a bad image before any partition starts).
pub fn check(image: &LinuxImage<'_>, memory: u64) -> Result<(), LinuxError> {
    let h = linux_boot::parse_header(image.kernel)?;
    linux_boot::plan(&h, image.kernel.len(), memory, image.initrd.len() as u64, image.cmdline.len())
        .map(|_| ())
}

/// Loads `image` into `mem`: the protected-mode kernel at its load address, the
/// initramfs at the top, the command line, the boot GDT and the zero page. Returns the
/// 64-bit entry point.
pub fn load(image: &LinuxImage<'_>, mem: &mut GuestMemory) -> Result<u64, LoadError> {
    let h = linux_boot::parse_header(image.kernel).map_err(LoadError::Image)?;
    let initrd_len = image.initrd.len() as u64;
    let layout =
        linux_boot::plan(&h, image.kernel.len(), mem.size(), initrd_len, image.cmdline.len())
            .map_err(LoadError::Image)?;
    let put = |mem: &mut GuestMemory, at: u64, bytes: &[u8]| {
        if mem.write(at, bytes) {
            Ok(())
        } else {
            Err(LoadError::Memory(at))
        }
    };
    put(mem, layout.kernel, &image.kernel[h.payload_offset..])?;
    if initrd_len != 0 {
        put(mem, layout.initrd, image.initrd)?;
    }
    put(mem, CMDLINE, image.cmdline.as_bytes())?;
    put(mem, CMDLINE + image.cmdline.len() as u64, &[0])?;
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        put(mem, GDT + i as u64 * 8, &e.to_le_bytes())?;
    }
    let e820 = linux_boot::e820_map(mem.size());
    let data = BootData { cmdline_addr: CMDLINE, initrd: (layout.initrd, initrd_len), e820: &e820 };
    put(mem, ZERO_PAGE, &linux_boot::zero_page(image.kernel, &h, &data))?;
    log::info!(
        "linux: boot protocol {}.{:02}, kernel {:#x}-{:#x} (init_size to {:#x}), initramfs {:#x}+{:#x}, entry {:#x}, command line \"{}\"",
        h.version >> 8,
        h.version & 0xFF,
        layout.kernel,
        layout.kernel + (image.kernel.len() - h.payload_offset) as u64,
        layout.kernel + u64::from(h.init_size),
        layout.initrd,
        initrd_len,
        layout.entry,
        image.cmdline
    );
    Ok(layout.entry)
}

/// A Linux guest's platform: its console UART and the other port devices.
pub struct LinuxPlatform {
    /// COM1, the guest's console.
    pub uart: Uart16550,
    /// Accesses to ports no device claims (read all ones, writes dropped, as on a PC
    /// with nothing at that port).
    pub unclaimed_ports: u64,
    /// PCI configuration space (a host bridge and the first assigned device).
    pub pci: PciHost,
    /// MSR accesses refused with #GP.
    pub msr_faults: u64,
    /// MSR accesses emulated.
    pub msrs: u64,
    /// What it was loaded from.
    pub source: LinuxSource,
}

/// MSR refusals logged one by one before they are only counted.
const MSR_FAULTS_LOGGED: u64 = 16;

impl LinuxPlatform {
    /// The platform of partition `name`, loaded from `source`.
    pub fn new(name: &str, source: LinuxSource) -> LinuxPlatform {
        LinuxPlatform {
            uart: Uart16550::new(COM1, name),
            unclaimed_ports: 0,
            pci: PciHost::default(),
            msr_faults: 0,
            msrs: 0,
            source,
        }
    }

    fn read(&mut self, port: u16, size: u8) -> u32 {
        if self.uart.claims(port) {
            self.uart.read(port, size)
        } else {
            self.unclaimed_ports += 1;
            u32::MAX
        }
    }

    fn write(&mut self, port: u16, size: u8, value: u32) {
        if self.uart.claims(port) {
            self.uart.write(port, size, value)
        } else {
            self.unclaimed_ports += 1;
        }
    }
}

impl Partition {
    /// Serves `exit` for a Linux guest when it is one the guest platform handles: port
    /// I/O (other than the hypercall and configuration ports), RDMSR and WRMSR. `None`:
    /// not a Linux guest or not such an exit (the run loop's own handling applies);
    /// `Some(stop)`: served, and whether the run ends.
    pub(super) fn serve_linux(&mut self, exit: &VmExit) -> Option<Option<Stop>> {
        let platform = self.linux.as_mut()?;
        let vcpu = self.vcpu.as_mut()?;
        match *exit {
            VmExit::Io { port, size, write, string: false, next_rip }
                if super::lifecycle::is_config_port(port) =>
            {
                // Configuration space: the host bridge and the device's virtual header,
                // whose MSI capability is the routed interrupt's (`interrupts.rs`).
                if write {
                    let value = vcpu.reg(Reg::Rax) as u32;
                    platform.pci.write(port, size, value, self.interrupt.as_mut());
                } else {
                    let value = platform.pci.read(port, size, self.interrupt.as_ref());
                    set_in_result(vcpu.as_mut(), size, value);
                }
                vcpu.set_rip(next_rip);
                Some(None)
            }
            VmExit::Io { port, size, write, string: false, next_rip }
                if port != guest::HYPERCALL_PORT
                    && !self.platform.as_ref().is_some_and(|p| p.claims(port)) =>
            {
                if write {
                    platform.write(port, size, vcpu.reg(Reg::Rax) as u32);
                } else {
                    let value = platform.read(port, size);
                    set_in_result(vcpu.as_mut(), size, value);
                }
                // The UART's interrupt (THR empty, when the driver asked for it) is ISA
                // line 4 on the guest platform's PIC: the tty layer's output waits for it.
                if let Some(pc) = self.platform.as_mut() {
                    pc.set_irq(uart::IRQ, platform.uart.irq_pending());
                }
                vcpu.set_rip(next_rip);
                Some(None)
            }
            VmExit::Msr { rip, write } => {
                let index = vcpu.reg(Reg::Rcx) as u32;
                let ok = if write {
                    let value = vcpu.reg(Reg::Rdx) << 32 | (vcpu.reg(Reg::Rax) & 0xFFFF_FFFF);
                    match msr::write(index, value) {
                        msr::Write::Drop => true,
                        msr::Write::Guest => vcpu.set_guest_msr(index, value),
                        msr::Write::Fault => false,
                    }
                } else {
                    let value = match msr::read(index) {
                        msr::Read::Value(v) => Some(v),
                        msr::Read::Tsc => Some(super::cycles()),
                        msr::Read::Guest => vcpu.guest_msr(index),
                        msr::Read::Fault => None,
                    };
                    if let Some(v) = value {
                        vcpu.set_rax(v & 0xFFFF_FFFF);
                        vcpu.set_reg(Reg::Rdx, v >> 32);
                    }
                    value.is_some()
                };
                if ok {
                    platform.msrs += 1;
                    // Past the RDMSR/WRMSR, by the length the backend reports.
                    vcpu.skip_instruction();
                } else {
                    platform.msr_faults += 1;
                    if platform.msr_faults <= MSR_FAULTS_LOGGED {
                        log::info!(
                            "partition {}: {} of MSR {index:#x} at {rip:#x} refused (#GP)",
                            self.name,
                            if write { "WRMSR" } else { "RDMSR" }
                        );
                    }
                    vcpu.inject_exception(13, Some(0));
                }
                Some(None)
            }
            // Any other exit may end the run: show the console's last, unfinished line.
            VmExit::HostInterrupt | VmExit::Emulated { .. } | VmExit::Hypercall { .. } => None,
            _ => {
                platform.uart.flush();
                None
            }
        }
    }

    /// Whether this partition runs a Linux guest.
    pub fn is_linux(&self) -> bool {
        self.linux.is_some()
    }
}

/// How long a Linux guest may run: about four minutes of host timer ticks (on an idle
/// machine the suite's boots end by themselves after 8-25 s under QEMU TCG; a machine
/// shared with other emulators runs the guest several times slower in the same wall
/// time) and enough exits for its console.
pub const BUDGET: Budget = Budget { ticks: 150_000, exits: 20_000_000 };

/// Runs a Linux partition until it stops (or its [`BUDGET`] runs out) and says how it
/// ended, with what its platform saw. The IOMMU fault service runs as for every partition
/// (`isolation::run_serviced`): a fault the guest's device takes is logged while the guest
/// runs, and the records are clear for the next one (QEMU's VT-d collapses a device's new
/// faults into a pending one).
pub fn run(
    p: &mut Partition,
    iommu: &mut crate::iommu::IommuSystem,
) -> Result<RunReport, PartitionError> {
    let r = super::isolation::run_serviced(p, BUDGET, iommu)?;
    let (lines, msrs, refused, unclaimed) = p
        .linux
        .as_ref()
        .map_or((0, 0, 0, 0), |l| (l.uart.lines, l.msrs, l.msr_faults, l.unclaimed_ports));
    log::info!(
        "partition {}: Linux ran {} ticks, {} exits ({} console lines, {} MSR accesses emulated, {} refused with #GP, {} port accesses to no device): {}",
        p.name,
        r.ticks,
        r.exits,
        lines,
        msrs,
        refused,
        unclaimed,
        describe_stop(&r.stop)
    );
    Ok(r)
}

/// The Linux part of the partition story: run `p`, destroy it keeping its (scrubbed)
/// memory, re-create it there from the same modules with the same devices, and run it
/// again; a re-created guest that does not reach the same end, or a run that ends in an
/// invalid guest state or an unknown exit, is a failure. Returns the
/// re-created partition (to be destroyed by the caller) and that failure, if any.
pub fn run_and_recreate(
    platform: &mut crate::Platform,
    mut p: Partition,
) -> Result<(Partition, Option<String>), String> {
    let first =
        run(&mut p, &mut platform.iommu).map_err(|e| format!("partition {}: {e}", p.name))?;
    let name = p.name.clone();
    let devices = p.devices.clone();
    let source = p.linux.as_ref().map(|l| l.source.clone()).ok_or("not a Linux partition")?;
    let backing = p.memory().map_or(String::new(), |m| format!("{}", m.backing()));
    let (mem, report) = p
        .destroy_keeping_memory_in(&mut platform.iommu)
        .map_err(|e| format!("destroy {name}: {e}"))?;
    super::story::log_destroy(&name, &backing, &report, " (to be re-created)");
    let mut again = Partition::create_linux_in(&name, mem, source)
        .map_err(|e| format!("re-create {name}: {e}"))?;
    for d in &devices {
        let f = platform.pci.iter().find(|f| f.bdf == *d).ok_or("device vanished")?;
        let route = platform.iommu.route(*d).ok_or("no route")?;
        again.attach_device(&mut platform.iommu, f, route).map_err(|e| format!("{e}"))?;
    }
    log::info!(
        "partition {name}: re-created in the same memory, {} device(s) attached again",
        devices.len()
    );
    let second =
        run(&mut again, &mut platform.iommu).map_err(|e| format!("partition {name}: {e}"))?;
    let same = core::mem::discriminant(&first.stop) == core::mem::discriminant(&second.stop);
    log::info!(
        "partition {name}: the re-created guest ended {} the first",
        if same { "as" } else { "differently from" }
    );
    // An exit the hardware refused or the run loop does not know is a hypervisor bug.
    let broken = |s: &Stop| matches!(s, Stop::InvalidState | Stop::UnknownExit(_));
    let failure = (!same || broken(&first.stop) || broken(&second.stop)).then(|| {
        format!("partition {name}: first run {:?}, re-created run {:?}", first.stop, second.stop)
    });
    Ok((again, failure))
}

/// A run's end in words, for a Linux partition's log.
pub fn describe_stop(stop: &Stop) -> String {
    match *stop {
        Stop::Shutdown => String::from("the guest shut down (triple fault: reboot=t or panic=-1)"),
        Stop::Halted => String::from("the guest halted (no interrupt source can wake it)"),
        Stop::BudgetExhausted => String::from("its time budget ran out (stopped)"),
        ref other => format!("{other:?}"),
    }
}
