//! The hypervisor. Built for `x86_64-unknown-none` by `cargo xtask build`; on the host it
//! compiles to a stub that says so, which keeps `cargo build --workspace` green.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the hypervisor runs on bare metal: build it with `cargo xtask build`");
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod acpi;
#[cfg(target_os = "none")]
mod apic;
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
#[macro_use]
mod console;
#[cfg(target_os = "none")]
mod demo;
#[cfg(target_os = "none")]
mod devices;
#[cfg(target_os = "none")]
mod edu;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod iommu;
#[cfg(target_os = "none")]
mod mem;
#[cfg(target_os = "none")]
mod mmio;
#[cfg(target_os = "none")]
mod msi;
#[cfg(target_os = "none")]
mod partition;
#[cfg(target_os = "none")]
mod pci;
#[cfg(target_os = "none")]
mod report;
#[cfg(target_os = "none")]
mod testing;
#[cfg(target_os = "none")]
mod tests;

#[cfg(target_os = "none")]
pub use bare::*;

#[cfg(target_os = "none")]
mod bare {
    use crate::exit::{exit, ExitCode};
    use crate::{acpi, apic, arch, console, demo, edu, iommu, mem, pci, report, testing};
    use alloc::vec::Vec;
    use boot::cmdline::{DeliberateFault, LogLevel, Mode, Options};
    use boot::console::{ConsoleUart, UartAccess};
    use boot::{BootInfo, MemoryKind, PhysReader};

    /// Everything the boot discovered, handed to the demo and the tests.
    pub struct Platform {
        /// What the boot loader told us.
        pub boot: &'static BootInfo,
        /// What ACPI told us.
        pub acpi: acpi::AcpiInfo,
        /// Every PCI function found.
        pub pci: Vec<pci::PciFunction>,
        /// QEMU edu test devices found.
        pub edus: Vec<edu::Edu>,
        /// The IOMMUs and where each device's DMA goes.
        pub iommu: iommu::IommuSystem,
    }

    static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();

    /// Loader structures are read through the boot identity map of the first 4 GiB.
    struct LoaderMemory;

    impl PhysReader for LoaderMemory {
        fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
            let end = addr.checked_add(len as u64)?;
            if addr == 0 || end > 1 << 32 {
                return None;
            }
            // SAFETY: the boot tables identity-map [0, 4 GiB); the loader's structures are
            // not reused before BootInfo has copied what it needs out of them.
            Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
        }
    }

    fn level_filter(l: LogLevel) -> log::LevelFilter {
        match l {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }

    fn fail(what: core::fmt::Arguments<'_>) -> ! {
        console::fall_back();
        log::error!("{what}");
        println!("run FAILED: {what}");
        exit(ExitCode::Failure)
    }

    fn log_memory_map(info: &BootInfo) {
        log::info!(
            "memory: {} regions, {} MiB usable",
            info.memory_map().len(),
            info.usable_bytes() >> 20
        );
        for r in info.memory_map() {
            let kind = match r.kind {
                MemoryKind::Usable => "usable",
                MemoryKind::Reserved => "reserved",
                MemoryKind::AcpiReclaimable => "ACPI reclaimable",
                MemoryKind::AcpiNvs => "ACPI NVS",
                MemoryKind::Bad => "bad",
            };
            log::info!("memory:   {:#014x}-{:#014x} {kind}", r.start, r.end());
        }
        if info.dropped_regions > 0 {
            log::warn!("memory: {} regions beyond the first 128 ignored", info.dropped_regions);
        }
    }

    fn console_chosen(c: ConsoleUart, why: &str) {
        if console::select(c) {
            log::info!("console: {c} ({why})");
        } else {
            // Nothing answers there: say so where someone may be listening.
            console::select(ConsoleUart::COM1);
            log::warn!("console: no UART answers at {c} ({why}); using {}", ConsoleUart::COM1);
        }
    }

    /// The console when the command line names none: the SPCR table's UART, else COM1.
    fn choose_default_console(acpi: &acpi::AcpiInfo) {
        let Some(table) = acpi.spcr else {
            return console_chosen(ConsoleUart::COM1, "default, no SPCR table");
        };
        match boot::console::parse_spcr(table) {
            Ok(c) => {
                if let ConsoleUart { access: UartAccess::Mmio { base, .. }, .. } = c {
                    if let Err(e) = mem::paging::map_mmio(base & !0xFFF, 0x1000) {
                        console_chosen(ConsoleUart::COM1, "default");
                        log::warn!("console: cannot map the SPCR UART at {base:#x}: {e}");
                        return;
                    }
                }
                console_chosen(c, "from the ACPI SPCR table")
            }
            Err(e) => {
                console_chosen(ConsoleUart::COM1, "default");
                log::warn!("[Firmware Bug] SPCR: {e}; the console stays on COM1");
            }
        }
    }

    /// Entered from the boot trampoline in long mode, on the boot stack.
    #[unsafe(no_mangle)]
    pub extern "C" fn kernel_main(magic: u32, info_addr: u32) -> ! {
        console::init(log::LevelFilter::Info);
        println!();
        println!("== micro-hypervisor {} ==", env!("CARGO_PKG_VERSION"));
        let info = match BootInfo::parse(magic, info_addr as u64, &LoaderMemory) {
            Ok(i) => BOOT_INFO.call_once(|| i),
            Err(e) => fail(format_args!("boot: {e}")),
        };
        let opts = match Options::parse(info.cmdline()) {
            Ok(o) => o,
            Err(e) => fail(format_args!("{e}")),
        };
        console::set_level(level_filter(opts.log));
        if opts.exit_bochs {
            crate::exit::use_bochs_shutdown();
        }
        // A port console can start now; an MMIO one once paging maps it uncached; the
        // default (SPCR, else COM1) once the ACPI tables are read.
        if let Some(c @ ConsoleUart { access: UartAccess::Port(_), .. }) = opts.console {
            console_chosen(c, "console=");
        }
        log::info!("boot: {} loader, command line \"{}\"", info.protocol, info.cmdline());
        match console::tsc_hz() {
            0 => log::info!("boot: no PIT to measure the TSC: time stamps are TSC cycles"),
            hz => log::info!(
                "boot: TSC {}.{:03} MHz (measured against the PIT)",
                hz / 1_000_000,
                hz / 1000 % 1000
            ),
        }
        arch::gdt::init();
        arch::idt::init();
        log_memory_map(info);

        let image = boot::entry::kernel_image();
        let mut keep = [(0u64, 0u64); 1 + boot::MAX_MODULES];
        keep[0] = image;
        for (i, m) in info.modules().iter().enumerate() {
            keep[i + 1] = (m.start, m.end);
        }
        if let Err(e) = mem::frames::init(info, &keep) {
            fail(format_args!("memory: {e}"));
        }
        if let Err(e) = mem::paging::init(info) {
            fail(format_args!("paging: {e}"));
        }
        if let Err(e) = mem::heap::init() {
            fail(format_args!("heap: {e}"));
        }
        if let Some(c @ ConsoleUart { access: UartAccess::Mmio { base, .. }, .. }) = opts.console {
            if let Err(e) = mem::paging::map_mmio(base & !0xFFF, 0x1000) {
                fail(format_args!("console: cannot map the MMIO UART at {base:#x}: {e}"));
            }
            console_chosen(c, "console=");
        }
        log::info!(
            "memory: kernel image {:#x}-{:#x}, {} MiB free after heap",
            image.0,
            image.1,
            mem::frames::free_frames() >> 8
        );

        let acpi = match acpi::discover(info) {
            Ok(a) => a,
            Err(e) => fail(format_args!("acpi: cannot read the ACPI tables: {e}")),
        };
        if !console::chosen() {
            choose_default_console(&acpi);
        }
        let pci = pci::enumerate(&acpi.ecam);
        pci::log_functions(&pci);
        if let Err(e) = apic::init() {
            fail(format_args!("local APIC: {e}"));
        }
        let has_config = crate::partition::config::has_config_module(info);
        let mode = opts.mode.unwrap_or(Mode::default_for(acpi.emulated(), has_config));
        if opts.tests.is_none() && mode == Mode::Report {
            if opts.mode.is_none() {
                log::info!(
                    "boot: not QEMU and no configuration module: report mode (mode=run to run partitions)"
                );
            }
            if let Err(e) = report::run(info, &acpi, &pci, opts.report_json) {
                fail(format_args!("report: {e}"));
            }
            exit(ExitCode::Success);
        }
        let edus = edu::Edu::find_all(&pci);
        for e in &edus {
            log::info!("edu: {} ready (requester id {:#06x})", e.bdf, e.bdf.requester_id());
        }
        let iommu = iommu::discover(&acpi, &pci, info, &opts);
        let mut platform = Platform { boot: info, acpi, pci, edus, iommu };

        if opts.fault == Some(DeliberateFault::PageFault) {
            log::warn!("fault=pagefault: reading an unmapped address on purpose");
            // SAFETY: not safe, on purpose: the read faults and the exception handler
            // reports it and ends the run. 256 GiB is never mapped here.
            let v = unsafe { core::ptr::read_volatile(0x40_0000_0000 as *const u64) };
            fail(format_args!("the deliberate page fault did not fault (read {v:#x})"));
        }

        if opts.tests.is_some() {
            let ok = testing::run(&opts, &mut platform);
            exit(if ok { ExitCode::Success } else { ExitCode::Failure });
        }
        if let Err(e) = crate::partition::config::run_configured(&mut platform) {
            fail(format_args!("partitions: {e}"));
        }
        if let Err(e) = demo::run(&mut platform) {
            fail(format_args!("demo: {e}"));
        }
        // Any DMA fault since bring-up is worth a line on a real machine.
        let stray = iommu::service_faults(&mut platform.iommu, |_| {});
        if stray.faults > 0 {
            log::warn!(
                "iommu: {} DMA faults since bring-up ({} fault interrupts)",
                stray.faults,
                iommu::fault_interrupts()
            );
        }
        log::info!("boot complete");
        exit(ExitCode::Success)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        console::emergency_print(format_args!("\n!!! PANIC: {info}\nrun FAILED: panic\n"));
        exit(ExitCode::Failure)
    }
}
