//! GDT with a TSS whose interrupt stack table gives the double-fault, NMI and
//! machine-check handlers stacks of their own (a kernel stack overflow then still reports).

use spin::Lazy;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot for double faults.
pub const DOUBLE_FAULT_IST: u16 = 0;
/// IST slot for NMI and machine checks.
pub const NMI_IST: u16 = 1;

const IST_STACK_SIZE: usize = 16 * 1024;

/// Only the CPU uses these bytes (as a stack), so Rust never reads the field.
#[repr(align(16))]
struct IstStack(#[allow(dead_code)] [u8; IST_STACK_SIZE]);

static mut DOUBLE_FAULT_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);
static mut NMI_STACK: IstStack = IstStack([0; IST_STACK_SIZE]);

static TSS: Lazy<TaskStateSegment> = Lazy::new(|| {
    let mut tss = TaskStateSegment::new();
    let top = |stack: *const IstStack| VirtAddr::from_ptr(stack) + IST_STACK_SIZE as u64;
    // Only the stacks' addresses are taken; the CPU alone uses them, on faults.
    tss.interrupt_stack_table[DOUBLE_FAULT_IST as usize] =
        top(core::ptr::addr_of!(DOUBLE_FAULT_STACK));
    tss.interrupt_stack_table[NMI_IST as usize] = top(core::ptr::addr_of!(NMI_STACK));
    tss
});

struct Gdt {
    table: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static GDT: Lazy<Gdt> = Lazy::new(|| {
    let mut table = GlobalDescriptorTable::new();
    let code = table.append(Descriptor::kernel_code_segment());
    let data = table.append(Descriptor::kernel_data_segment());
    let tss = table.append(Descriptor::tss_segment(&TSS));
    Gdt { table, code, data, tss }
});

/// The kernel code selector (for IDT gates).
pub fn code_selector() -> SegmentSelector {
    GDT.code
}

/// Loads the GDT, reloads the segment registers and the task register.
pub fn init() {
    GDT.table.load();
    // SAFETY: the selectors come from the GDT just loaded, which lives for the whole run
    // (a static), and describe flat 64-bit code/data and a valid TSS.
    unsafe {
        CS::set_reg(GDT.code);
        DS::set_reg(GDT.data);
        ES::set_reg(GDT.data);
        SS::set_reg(GDT.data);
        load_tss(GDT.tss);
    }
}
