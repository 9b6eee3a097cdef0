//! The guest program a partition runs: 64-bit, identity-mapped. It reads its
//! [`guest::BootInfo`], probes its memory, drives its edu device through the BAR the
//! hypervisor mapped into it, takes the device's completion interrupts (`bare/irq.rs`), and
//! reports every result through the hypercall port.
//! On the host it compiles to a stub.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the guest runs inside a partition: `cargo xtask build` embeds it in the hypervisor");
}

#[cfg(target_os = "none")]
mod hostile;

#[cfg(target_os = "none")]
mod bare {
    use crate::hostile;
    use core::arch::asm;
    use guest::{check, op, scenario, BootInfo, BOOT_MAGIC, HYPERCALL_PORT, PROBE_START};

    /// How hypercalls leave the guest.
    #[derive(Clone, Copy)]
    pub(crate) enum Channel {
        Port,
        /// AMD's VMMCALL (SVM).
        Vmmcall,
        /// Intel's VMCALL (VMX).
        Vmcall,
    }

    /// The CPU's hypercall instruction: VMCALL on an Intel CPU (CPUID vendor
    /// "GenuineIntel"), VMMCALL otherwise. One emulated CPUID, at start.
    fn hypercall_instruction() -> Channel {
        let vendor = core::arch::x86_64::__cpuid(0);
        // "Genu" "ineI" "ntel" in EBX, EDX, ECX.
        if (vendor.ebx, vendor.edx, vendor.ecx) == (0x756E_6547, 0x4965_6E69, 0x6C65_746E) {
            Channel::Vmcall
        } else {
            Channel::Vmmcall
        }
    }

    pub(crate) fn hypercall(ch: Channel, code: u32, a: u64, b: u64) {
        match ch {
            // SAFETY: an OUT to the hypercall port exits to the hypervisor, which reads
            // the registers and resumes us after the instruction. No memory of ours is
            // written; for LOG the hypervisor reads `b` bytes at `a`, which callers pass
            // as a live `&str` of ours (see `say`), so the read sees initialised bytes.
            Channel::Port => unsafe {
                asm!("out dx, eax", in("dx") HYPERCALL_PORT, in("eax") code, in("rcx") a, in("rsi") b, options(nostack));
            },
            // SAFETY: as above (LOG's bytes are read, nothing is written); VMMCALL is
            // intercepted and skipped by the hypervisor.
            Channel::Vmmcall => unsafe {
                asm!("vmmcall", in("eax") code, in("rcx") a, in("rsi") b, options(nostack));
            },
            // SAFETY: as for VMMCALL: VMCALL exits to the hypervisor, which skips it.
            Channel::Vmcall => unsafe {
                asm!("vmcall", in("eax") code, in("rcx") a, in("rsi") b, options(nostack));
            },
        }
    }

    pub(crate) fn report(ch: Channel, id: u64, value: u64) {
        hypercall(ch, op::REPORT, id, value);
    }

    pub(crate) fn say(ch: Channel, text: &str) {
        hypercall(ch, op::LOG, text.as_ptr() as u64, text.len() as u64);
    }

    fn read64(addr: u64) -> u64 {
        // SAFETY: callers pass 8-aligned addresses of the guest's own RAM or of the
        // device BAR, all inside the identity map the hypervisor built for us.
        unsafe { core::ptr::read_volatile(addr as *const u64) }
    }

    fn write64(addr: u64, v: u64) {
        // SAFETY: as for `read64`.
        unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
    }

    fn read32(addr: u64) -> u32 {
        // SAFETY: as for `read64` (4-aligned device registers).
        unsafe { core::ptr::read_volatile(addr as *const u32) }
    }

    fn write32(addr: u64, v: u32) {
        // SAFETY: as for `read64`.
        unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
    }

    /// Entered from the hypervisor with RDI = the boot page, in long mode (IF = 0 under
    /// SVM, 1 under VMX: neither matters, no interrupt reaches us before we install an
    /// IDT).
    #[unsafe(no_mangle)]
    #[unsafe(link_section = ".text._start")]
    pub extern "C" fn _start(info: *const BootInfo) -> ! {
        // SAFETY: the hypervisor put the boot page at this address before entry.
        let info = unsafe { core::ptr::read_volatile(info) };
        let ch = if info.scenario == scenario::NORMAL_VMMCALL {
            hypercall_instruction()
        } else {
            Channel::Port
        };
        if info.magic != BOOT_MAGIC {
            hypercall(ch, op::DONE, 0xbad, 0);
        }
        match info.scenario {
            scenario::HALT => halt(),
            scenario::RUNAWAY => runaway(),
            scenario::TRIPLE_FAULT => triple_fault(),
            scenario::PLATFORM_TIMERS
            | scenario::PLATFORM_MASKED
            | scenario::PLATFORM_UNDECODABLE
            | scenario::PLATFORM_SPIN
            | scenario::PLATFORM_IDLE
            | scenario::PLATFORM_HOSTILE => {
                let status = platform::run(ch, &info);
                hypercall(ch, op::DONE, status, 0);
                halt()
            }
            scenario::PLATFORM_REDELIVERY => {
                let status = redelivery::run(ch, &info);
                hypercall(ch, op::DONE, status, 0);
                halt()
            }
            s if guest::attack::scenario::is_hostile(s) => {
                let status = hostile::run(ch, &info);
                hypercall(ch, op::DONE, status, 0);
                halt()
            }
            _ => {}
        }
        say(ch, "started");
        let status = if info.scenario == scenario::DMA_ROUNDS {
            edu::rounds(ch, &info)
        } else {
            normal(ch, &info)
        };
        hypercall(ch, op::DONE, status, 0);
        halt()
    }

    fn normal(ch: Channel, info: &BootInfo) -> u64 {
        // Fresh memory must read as zeros: count anything else.
        let mut nonzero = 0;
        let mut a = PROBE_START;
        while a < info.memory_size {
            nonzero += (read64(a) != 0) as u64;
            a += 8;
        }
        report(ch, check::NONZERO_WORDS, nonzero);
        let mut stamped = 0;
        let mut page = PROBE_START;
        while page < info.memory_size {
            write64(page, guest::page_stamp(page));
            stamped += 1;
            page += 4096;
        }
        report(ch, check::PAGES_STAMPED, stamped);
        let mut status = (nonzero != 0) as u64;
        if info.edu_bar != 0 && info.device_id != guest::EDU_PCI_ID {
            // Not the device this program knows: its registers could be anything.
            report(ch, check::DEVICE_REFUSED, info.device_id);
            say(ch, "the assigned device is not an edu device: its BAR is left alone");
            status |= 1 << 2;
        } else if info.edu_bar != 0 {
            status |= edu::run(ch, info) << 1;
        }
        status
    }

    mod idt;
    mod irq;
    mod platform;
    mod redelivery;

    pub(crate) mod edu {
        use super::{read32, read64, report, say, write32, write64, Channel};
        use guest::{check, dma_pattern, BootInfo, DMA_LEN, DMA_ROUNDS, DMA_SOURCE, DMA_TARGET};

        const ID: u64 = 0x00;
        const ALIVE: u64 = 0x04;
        const SRC: u64 = 0x80;
        const DST: u64 = 0x88;
        const COUNT: u64 = 0x90;
        const CMD: u64 = 0x98;
        const BUFFER: u64 = 0x40000;
        const POLLS: u32 = 20_000_000;

        /// One DMA between device address `addr` and the device buffer; false on timeout.
        pub(crate) fn dma(bar: u64, addr: u64, to_ram: bool) -> bool {
            let (src, dst) = if to_ram { (BUFFER, addr) } else { (addr, BUFFER) };
            write64(bar + SRC, src);
            write64(bar + DST, dst);
            write64(bar + COUNT, DMA_LEN);
            write64(bar + CMD, 1 | if to_ram { 2 } else { 0 });
            (0..POLLS).any(|_| read64(bar + CMD) & 1 == 0)
        }

        fn fill(base: u64, f: impl Fn(u64) -> u8) {
            for i in 0..DMA_LEN {
                // SAFETY: [base, base + DMA_LEN) is one of the guest's own DMA pages.
                unsafe { core::ptr::write_volatile((base + i) as *mut u8, f(i)) };
            }
        }

        fn count(base: u64, f: impl Fn(u64, u8) -> bool) -> u64 {
            // SAFETY: as for `fill`.
            (0..DMA_LEN)
                .filter(|&i| f(i, unsafe { core::ptr::read_volatile((base + i) as *const u8) }))
                .count() as u64
        }

        /// Pattern `round` -> device -> the target page; the bytes that matched, or
        /// `None` on a timeout.
        fn own_copy(bar: u64, round: u64) -> Option<u64> {
            fill(DMA_SOURCE, |i| dma_pattern(round, i));
            fill(DMA_TARGET, |_| 0);
            if !dma(bar, DMA_SOURCE, false) || !dma(bar, DMA_TARGET, true) {
                return None;
            }
            Some(count(DMA_TARGET, |i, b| b == dma_pattern(round, i)))
        }

        /// Reads `addr` through the device into the (zeroed) source page: the nonzero
        /// bytes that arrived, or `None` on a timeout.
        fn read_back(bar: u64, addr: u64) -> Option<u64> {
            fill(DMA_SOURCE, |_| 0);
            if !dma(bar, addr, false) || !dma(bar, DMA_SOURCE, true) {
                return None;
            }
            Some(count(DMA_SOURCE, |_, b| b != 0))
        }

        /// The device answers through the passed-through BAR; false when it does not.
        fn alive(ch: Channel, bar: u64) -> bool {
            report(ch, check::EDU_ID, read32(bar + ID) as u64);
            write32(bar + ALIVE, 0x1357_9bdf);
            let alive = read32(bar + ALIVE) == !0x1357_9bdf;
            report(ch, check::EDU_ALIVE, alive as u64);
            alive
        }

        /// The normal program's device part. Returns 0 when every step worked.
        pub fn run(ch: Channel, info: &BootInfo) -> u64 {
            let bar = info.edu_bar;
            if !alive(ch, bar) {
                return 1;
            }
            if info.dma_allowed == 0 {
                say(ch, "edu DMA not allowed (no IOMMU translation yet)");
                return 0;
            }
            // Own memory: the copy must land (the hypervisor checks the host frame too).
            let Some(matched) = own_copy(bar, 0) else {
                report(ch, check::DMA_TIMEOUT, 1);
                return 1;
            };
            report(ch, check::DMA_OWN_MATCHED, matched);
            // Forbidden addresses: the pattern still in the device buffer is written
            // there (the hypervisor checks nothing changed), then each is read back.
            for (step, addr) in [(2, info.dma_foreign), (3, info.dma_hypervisor)] {
                if addr == 0 {
                    continue;
                }
                if !dma(bar, addr, true) {
                    report(ch, check::DMA_TIMEOUT, step);
                    return 1;
                }
                say(ch, "tried a forbidden DMA write");
            }
            let mut leaked = 0;
            let tries = [
                (check::DMA_OUTSIDE_NONZERO, info.dma_outside),
                (check::DMA_FOREIGN_NONZERO, info.dma_foreign),
                (check::DMA_HYPERVISOR_NONZERO, info.dma_hypervisor),
            ];
            for (id, addr) in tries {
                if addr == 0 {
                    continue;
                }
                let Some(n) = read_back(bar, addr) else {
                    report(ch, check::DMA_TIMEOUT, id);
                    return 1;
                };
                report(ch, id, n);
                leaked += n;
            }
            super::irq::APIC_EOI.store(info.platform as u8, core::sync::atomic::Ordering::Relaxed);
            let irq = super::irq::run(ch, bar);
            (matched != DMA_LEN || leaked != 0 || irq != 0) as u64
        }

        /// [`guest::scenario::DMA_ROUNDS`]: own-memory copies only, one report each.
        pub fn rounds(ch: Channel, info: &BootInfo) -> u64 {
            let bar = info.edu_bar;
            if bar == 0 || info.dma_allowed == 0 || !alive(ch, bar) {
                return 1;
            }
            let mut status = 0;
            for round in 1..=DMA_ROUNDS {
                let matched = own_copy(bar, round).unwrap_or(0);
                report(ch, check::DMA_ROUND, round << 32 | matched);
                status |= (matched != DMA_LEN) as u64;
            }
            status
        }
    }

    fn halt() -> ! {
        loop {
            // SAFETY: HLT exits to the hypervisor (intercepted); it never resumes a
            // halted guest, and if it did we would halt again.
            unsafe { asm!("hlt", options(nomem, nostack)) };
        }
    }

    fn runaway() -> ! {
        let mut n: u64 = 0;
        loop {
            n = core::hint::black_box(n.wrapping_add(1));
        }
    }

    fn triple_fault() -> ! {
        #[repr(C, packed)]
        struct Idtr {
            limit: u16,
            base: u64,
        }
        let empty = Idtr { limit: 0, base: 0 };
        // SAFETY: deliberately fatal: with an empty IDT the #UD cannot be delivered, which
        // escalates to a double and then a triple fault; the CPU shuts the guest down.
        unsafe { asm!("lidt [{}]", "ud2", in(reg) &empty, options(nostack)) };
        halt()
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        hypercall(Channel::Port, op::DONE, 0xdead, 0);
        halt()
    }
}
