//! Interrupt descriptor table: every exception vector reports itself readably and fails
//! the run; vectors 32..80 dispatch to registered device handlers; the local APIC's
//! spurious vector (0xFF) returns at once.
//!
//! Entry stubs are naked functions (stable Rust has no `x86-interrupt` ABI): each pushes
//! a dummy error code where the CPU pushes none, then its vector, and jumps to one common
//! path that saves the general registers and calls [`dispatch`].

use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::instructions::tables::lidt;
use x86_64::registers::control::Cr2;
use x86_64::structures::DescriptorTablePointer;
use x86_64::VirtAddr;

use super::gdt;

const VECTORS: usize = 80;

/// What the common entry path saved, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct InterruptFrame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    /// The vector number the stub pushed.
    pub vector: u64,
    /// The CPU's error code (0 where the exception has none).
    pub error_code: u64,
    /// Where the interrupted code was.
    pub rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

const EXCEPTION_NAMES: [&str; 32] = [
    "Divide error (#DE)",
    "Debug (#DB)",
    "Non-maskable interrupt (NMI)",
    "Breakpoint (#BP)",
    "Overflow (#OF)",
    "BOUND range exceeded (#BR)",
    "Invalid opcode (#UD)",
    "Device not available (#NM)",
    "Double fault (#DF)",
    "Coprocessor segment overrun",
    "Invalid TSS (#TS)",
    "Segment not present (#NP)",
    "Stack-segment fault (#SS)",
    "General protection fault (#GP)",
    "Page fault (#PF)",
    "Reserved (15)",
    "x87 floating-point error (#MF)",
    "Alignment check (#AC)",
    "Machine check (#MC)",
    "SIMD floating-point exception (#XM)",
    "Virtualization exception (#VE)",
    "Control protection exception (#CP)",
    "Reserved (22)",
    "Reserved (23)",
    "Reserved (24)",
    "Reserved (25)",
    "Reserved (26)",
    "Reserved (27)",
    "Hypervisor injection exception (#HV)",
    "VMM communication exception (#VC)",
    "Security exception (#SX)",
    "Reserved (31)",
];

macro_rules! stub {
    ($name:ident, $vector:expr, error_code) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            core::arch::naked_asm!("push {v}", "jmp {common}", v = const $vector, common = sym common_entry)
        }
    };
    ($name:ident, $vector:expr) => {
        #[unsafe(naked)]
        extern "C" fn $name() {
            core::arch::naked_asm!("push 0", "push {v}", "jmp {common}", v = const $vector, common = sym common_entry)
        }
    };
}

stub!(v0, 0);
stub!(v1, 1);
stub!(v2, 2);
stub!(v3, 3);
stub!(v4, 4);
stub!(v5, 5);
stub!(v6, 6);
stub!(v7, 7);
stub!(v8, 8, error_code);
stub!(v9, 9);
stub!(v10, 10, error_code);
stub!(v11, 11, error_code);
stub!(v12, 12, error_code);
stub!(v13, 13, error_code);
stub!(v14, 14, error_code);
stub!(v15, 15);
stub!(v16, 16);
stub!(v17, 17, error_code);
stub!(v18, 18);
stub!(v19, 19);
stub!(v20, 20);
stub!(v21, 21, error_code);
stub!(v22, 22);
stub!(v23, 23);
stub!(v24, 24);
stub!(v25, 25);
stub!(v26, 26);
stub!(v27, 27);
stub!(v28, 28);
stub!(v29, 29, error_code);
stub!(v30, 30, error_code);
stub!(v31, 31);
stub!(v32, 32);
stub!(v33, 33);
stub!(v34, 34);
stub!(v35, 35);
stub!(v36, 36);
stub!(v37, 37);
stub!(v38, 38);
stub!(v39, 39);
stub!(v40, 40);
stub!(v41, 41);
stub!(v42, 42);
stub!(v43, 43);
stub!(v44, 44);
stub!(v45, 45);
stub!(v46, 46);
stub!(v47, 47);
stub!(v48, 48);
stub!(v49, 49);
stub!(v50, 50);
stub!(v51, 51);
stub!(v52, 52);
stub!(v53, 53);
stub!(v54, 54);
stub!(v55, 55);
stub!(v56, 56);
stub!(v57, 57);
stub!(v58, 58);
stub!(v59, 59);
stub!(v60, 60);
stub!(v61, 61);
stub!(v62, 62);
stub!(v63, 63);
stub!(v64, 64);
stub!(v65, 65);
stub!(v66, 66);
stub!(v67, 67);
stub!(v68, 68);
stub!(v69, 69);
stub!(v70, 70);
stub!(v71, 71);
stub!(v72, 72);
stub!(v73, 73);
stub!(v74, 74);
stub!(v75, 75);
stub!(v76, 76);
stub!(v77, 77);
stub!(v78, 78);
stub!(v79, 79);

/// The local APIC's spurious-interrupt vector (programmed in its SVR by `apic::init`).
pub const SPURIOUS_VECTOR: u8 = 0xFF;

/// Spurious interrupts: the local APIC sets no in-service bit for them, so they take no
/// EOI and need no handler; return at once.
#[unsafe(naked)]
extern "C" fn spurious() {
    core::arch::naked_asm!("iretq")
}

const STUBS: [extern "C" fn(); VECTORS] = [
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15, v16, v17, v18, v19, v20,
    v21, v22, v23, v24, v25, v26, v27, v28, v29, v30, v31, v32, v33, v34, v35, v36, v37, v38, v39,
    v40, v41, v42, v43, v44, v45, v46, v47, v48, v49, v50, v51, v52, v53, v54, v55, v56, v57, v58,
    v59, v60, v61, v62, v63, v64, v65, v66, v67, v68, v69, v70, v71, v72, v73, v74, v75, v76, v77,
    v78, v79,
];

#[unsafe(naked)]
extern "C" fn common_entry() {
    core::arch::naked_asm!(
        "push rax", "push rbx", "push rcx", "push rdx", "push rsi", "push rdi", "push rbp",
        "push r8", "push r9", "push r10", "push r11", "push r12", "push r13", "push r14",
        "push r15",
        "mov rdi, rsp",
        "cld",
        "call {dispatch}",
        "pop r15", "pop r14", "pop r13", "pop r12", "pop r11", "pop r10", "pop r9", "pop r8",
        "pop rbp", "pop rdi", "pop rsi", "pop rdx", "pop rcx", "pop rbx", "pop rax",
        "add rsp, 16",
        "iretq",
        dispatch = sym dispatch,
    )
}

/// Device handlers for vectors 32..80, as `fn()` addresses (0 = none).
static HANDLERS: [AtomicUsize; VECTORS - 32] = [const { AtomicUsize::new(0) }; VECTORS - 32];

/// Routes `vector` (32..80) to `handler`, which runs with interrupts off and must
/// acknowledge its device and the local APIC itself.
pub fn register_handler(vector: u8, handler: fn()) {
    if let Some(slot) = (vector as usize).checked_sub(32).and_then(|i| HANDLERS.get(i)) {
        slot.store(handler as usize, Ordering::Release);
    }
}

extern "C" fn dispatch(frame: &mut InterruptFrame) {
    let vector = frame.vector as usize;
    if vector < 32 {
        report_exception(frame);
        crate::exit::exit(crate::exit::ExitCode::Failure);
    }
    let handler = HANDLERS.get(vector - 32).map_or(0, |h| h.load(Ordering::Acquire));
    if handler == 0 {
        crate::console::emergency_print(format_args!("unexpected interrupt, vector {vector}\n"));
        // A device vector without a handler still holds its in-service bit: acknowledge
        // it, or every interrupt of equal or lower priority stays blocked.
        crate::apic::eoi();
        return;
    }
    // SAFETY: only `register_handler` stores into HANDLERS, and it stores `fn()` addresses.
    let handler: fn() = unsafe { core::mem::transmute::<usize, fn()>(handler) };
    handler();
}

fn report_exception(frame: &InterruptFrame) {
    let v = frame.vector as usize;
    let name = EXCEPTION_NAMES.get(v).copied().unwrap_or("unknown");
    let p = crate::console::emergency_print;
    p(format_args!("\n!!! EXCEPTION: {name}, vector {v}, error code {:#x}\n", frame.error_code));
    p(format_args!(
        "    RIP {:#018x}  CS {:#x}  RFLAGS {:#x}\n",
        frame.rip, frame.cs, frame.rflags
    ));
    p(format_args!("    RSP {:#018x}  SS {:#x}\n", frame.rsp, frame.ss));
    if v == 14 {
        let e = frame.error_code;
        p(format_args!(
            "    CR2 {:#018x} ({} {} in {} mode{})\n",
            Cr2::read_raw(),
            if e & 1 != 0 { "protection violation on" } else { "not-present page on" },
            if e & 0x10 != 0 {
                "instruction fetch"
            } else if e & 2 != 0 {
                "write"
            } else {
                "read"
            },
            if e & 4 != 0 { "user" } else { "kernel" },
            if e & 8 != 0 { ", reserved bit set" } else { "" },
        ));
    }
    p(format_args!(
        "    RAX {:#x} RBX {:#x} RCX {:#x} RDX {:#x} RSI {:#x} RDI {:#x} RBP {:#x}\n",
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp
    ));
    p(format_args!("run FAILED: unhandled exception\n"));
}

/// One 16-byte IDT gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    fn interrupt(handler: u64, selector: u16, ist: Option<u16>) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            ist: ist.map_or(0, |i| i as u8 + 1),
            type_attr: 0x8E, // present, DPL 0, 64-bit interrupt gate
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Lazy<Idt> = spin::Lazy::new(|| {
    let mut idt = Idt([Gate::EMPTY; 256]);
    let cs = gdt::code_selector().0;
    for (v, stub) in STUBS.iter().enumerate() {
        let ist = match v {
            8 => Some(gdt::DOUBLE_FAULT_IST),
            2 | 18 => Some(gdt::NMI_IST),
            _ => None,
        };
        idt.0[v] = Gate::interrupt(*stub as usize as u64, cs, ist);
    }
    idt.0[SPURIOUS_VECTOR as usize] =
        Gate::interrupt(spurious as extern "C" fn() as usize as u64, cs, None);
    idt
});

/// Loads the IDT. Call after [`gdt::init`].
pub fn init() {
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::from_ptr(&*IDT as *const Idt),
    };
    // SAFETY: IDT is a static that lives for the whole run and every present gate points
    // at a stub that follows the interrupt calling convention above.
    unsafe { lidt(&ptr) };
}
