//! The VMX entry routine (VMLAUNCH/VMRESUME and the exit path, with the guest's
//! general-purpose registers the VMCS does not hold) and the VMCS instructions VMCLEAR
//! and VMPTRLD.

use super::super::vcpu::GuestRegs;
use super::vmcs;
use core::arch::asm;

// partition_vmx_run(regs: RDI, launched: RSI) -> RAX: 0 after a VM exit, 1 when
// VMLAUNCH/VMRESUME failed. Saves the host's callee-saved registers and the register-file
// pointer on the stack, writes HOST_RSP (this stack) and HOST_RIP (label 2) into the
// current VMCS, loads the guest's registers from its `GuestRegs` (8 bytes per register in
// x86 order; RSP is the VMCS's) and enters; at the exit (label 2, stack as it was) stores
// the guest's registers back and returns. Interrupts are off throughout (the
// caller's `cli`); an exit leaves RFLAGS = 0x2.
core::arch::global_asm!(
    ".global partition_vmx_run",
    "partition_vmx_run:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "mov rax, {host_rsp}",
    "vmwrite rax, rsp",
    "mov rax, {host_rip}",
    "lea rbx, [rip + 2f]",
    "vmwrite rax, rbx",
    "cmp rsi, 0",
    "mov rax, [rdi + 0x00]",
    "mov rcx, [rdi + 0x08]",
    "mov rdx, [rdi + 0x10]",
    "mov rbx, [rdi + 0x18]",
    "mov rbp, [rdi + 0x28]",
    "mov rsi, [rdi + 0x30]",
    "mov r8, [rdi + 0x40]",
    "mov r9, [rdi + 0x48]",
    "mov r10, [rdi + 0x50]",
    "mov r11, [rdi + 0x58]",
    "mov r12, [rdi + 0x60]",
    "mov r13, [rdi + 0x68]",
    "mov r14, [rdi + 0x70]",
    "mov r15, [rdi + 0x78]",
    "mov rdi, [rdi + 0x38]",
    "jne 3f",
    "vmlaunch",
    "jmp 4f",
    "3:",
    "vmresume",
    "4:",
    // The entry failed: nothing of the guest ran. Host registers back, status 1.
    "pop rdi",
    "mov eax, 1",
    "jmp 5f",
    "2:",
    "push rax",
    "mov rax, [rsp + 8]",
    "mov [rax + 0x08], rcx",
    "mov [rax + 0x10], rdx",
    "mov [rax + 0x18], rbx",
    "mov [rax + 0x28], rbp",
    "mov [rax + 0x30], rsi",
    "mov [rax + 0x38], rdi",
    "mov [rax + 0x40], r8",
    "mov [rax + 0x48], r9",
    "mov [rax + 0x50], r10",
    "mov [rax + 0x58], r11",
    "mov [rax + 0x60], r12",
    "mov [rax + 0x68], r13",
    "mov [rax + 0x70], r14",
    "mov [rax + 0x78], r15",
    "pop rbx",
    "mov [rax + 0x00], rbx",
    "pop rdi",
    "xor eax, eax",
    "5:",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    host_rsp = const vmcs::HOST_RSP.encoding,
    host_rip = const vmcs::HOST_RIP.encoding,
);

// The routine addresses the register file as 16 consecutive u64s.
const _: () = assert!(core::mem::size_of::<GuestRegs>() == 16 * 8);

unsafe extern "C" {
    pub(super) fn partition_vmx_run(regs: *mut GuestRegs, launched: u64) -> u64;
}

/// # Safety
/// VMX operation is on and `vmcs` is a VMCS frame the caller owns.
pub(super) unsafe fn vmx_op_clear(vmcs: u64) -> bool {
    let failed: u8;
    // SAFETY: per the caller.
    unsafe {
        asm!("vmclear [{}]", "setna {}", in(reg) &vmcs, out(reg_byte) failed, options(nostack))
    };
    failed != 0
}

/// # Safety
/// As for [`vmx_op_clear`], and the VMCS was initialized by VMCLEAR.
pub(super) unsafe fn vmx_op_ptrld(vmcs: u64) -> bool {
    let failed: u8;
    // SAFETY: per the caller.
    unsafe {
        asm!("vmptrld [{}]", "setna {}", in(reg) &vmcs, out(reg_byte) failed, options(nostack))
    };
    failed != 0
}
