//! The SVM world-switch routine: `clgi`, `vmsave`/`vmload` of the state VMRUN does not
//! switch, the guest's general-purpose registers in and out of its [`GuestRegs`],
//! `vmrun`, `stgi`. What surrounds it (XSAVE state, XCR0, debug registers) is `world.rs`.

use super::vcpu::GuestRegs;

// partition_svm_vmrun(vmcb: RDI, regs: RSI, host_save: RDX). Saves the host's
// callee-saved registers; with GIF clear, `vmsave`s the host's FS/GS/TR/LDTR/SYSCALL MSRs
// into the page at RDX (skipped when RDX = 0: the switch's test knob) and `vmload`s the
// guest's from its VMCB (RDI), loads the guest's registers from `GuestRegs` (RSI: 8 bytes
// per register in x86 order; RAX and RSP are the VMCB's, VMRUN loads them), `vmrun`s,
// stores the guest's registers back, `vmsave`s the guest's state into its VMCB and
// `vmload`s the host's, disables every breakpoint (DR7 = 0x400), sets GIF and restores the
// host's registers. A pending host interrupt is taken right after `stgi`, never on guest
// TR.
core::arch::global_asm!(
    ".global partition_svm_vmrun",
    "partition_svm_vmrun:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "push rdi",
    "push rdx",
    "push rsi",
    "clgi",
    "test rdx, rdx",
    "jz 2f",
    "mov rax, rdx",
    "vmsave rax",
    "mov rax, rdi",
    "vmload rax",
    "2:",
    "mov rax, rdi",
    "mov rcx, [rsi + 0x08]",
    "mov rdx, [rsi + 0x10]",
    "mov rbx, [rsi + 0x18]",
    "mov rbp, [rsi + 0x28]",
    "mov rdi, [rsi + 0x38]",
    "mov r8, [rsi + 0x40]",
    "mov r9, [rsi + 0x48]",
    "mov r10, [rsi + 0x50]",
    "mov r11, [rsi + 0x58]",
    "mov r12, [rsi + 0x60]",
    "mov r13, [rsi + 0x68]",
    "mov r14, [rsi + 0x70]",
    "mov r15, [rsi + 0x78]",
    "mov rsi, [rsi + 0x30]",
    "clgi",
    "vmrun rax",
    "push rsi",
    "mov rsi, [rsp + 8]",
    "mov [rsi + 0x08], rcx",
    "mov [rsi + 0x10], rdx",
    "mov [rsi + 0x18], rbx",
    "mov [rsi + 0x28], rbp",
    "mov [rsi + 0x38], rdi",
    "mov [rsi + 0x40], r8",
    "mov [rsi + 0x48], r9",
    "mov [rsi + 0x50], r10",
    "mov [rsi + 0x58], r11",
    "mov [rsi + 0x60], r12",
    "mov [rsi + 0x68], r13",
    "mov [rsi + 0x70], r14",
    "mov [rsi + 0x78], r15",
    "pop rax",
    "mov [rsi + 0x30], rax",
    "add rsp, 8",
    "pop rdx",
    "pop rdi",
    "test rdx, rdx",
    "jz 3f",
    "mov rax, rdi",
    "vmsave rax",
    "mov rax, rdx",
    "vmload rax",
    "3:",
    // No guest breakpoint (DR0-DR3 are still the guest's) may fire in host code before
    // `world` restores the host's debug registers: disable them all before GIF is set.
    "mov eax, 0x400",
    "mov dr7, rax",
    "stgi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
);

// The routine addresses the register file as 16 consecutive u64s.
const _: () = assert!(core::mem::size_of::<GuestRegs>() == 16 * 8);

unsafe extern "C" {
    /// See the routine above.
    pub fn partition_svm_vmrun(vmcb: u64, regs: *mut GuestRegs, host_save: u64);
}
