/* Boot headers and the 32-bit to long-mode trampoline.
 *
 * Three ways in, one way out:
 *   Multiboot1 (QEMU -kernel, a.out kludge) and Multiboot2 (GRUB) enter _start32 with the
 *   loader's magic in EAX and its information pointer in EBX;
 *   PVH (QEMU -kernel through the Xen note) enters _start_pvh with the start info in EBX.
 * All arrive in 32-bit protected mode with paging off. We zero .bss, identity-map the
 * first 4 GiB with 2 MiB pages, enter long mode and call kernel_main(magic, info). */

    .section .boot_header, "a"
    .balign 4
__mb1_header:
    .long 0x1BADB002            /* magic */
    .long 0x00010003            /* page-align modules, memory info, a.out kludge */
    .long 0xE4514FFB            /* checksum: -(magic + flags) */
    .long __mb1_header          /* header_addr */
    .long __load_start          /* load_addr */
    .long __load_end            /* load_end_addr */
    .long __bss_end             /* bss_end_addr */
    .long _start32              /* entry_addr */

    .balign 8
__mb2_header:
    .long 0xE85250D6            /* magic */
    .long 0                     /* architecture: i386 protected mode */
    .long 24                    /* header length */
    .long 0x17ADAF12            /* checksum: -(magic + arch + length) */
    .short 0, 0                 /* end tag */
    .long 8

    .section .note.Xen, "a"
    .balign 4
    .long 4                     /* name size: "Xen\0" */
    .long 8                     /* descriptor size */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .quad _start_pvh

    .section .text.boot, "ax"
    .code32
    .global _start32
_start32:
    cli
    cld
    movl %eax, __boot_magic
    movl %ebx, __boot_info
    jmp 1f

    .global _start_pvh
_start_pvh:
    cli
    cld
    movl $0x336EC578, __boot_magic
    movl %ebx, __boot_info

1:  /* Zero .bss: not every loader promises it. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    movl $__boot_stack_top, %esp

    /* 2048 PDEs of 2 MiB: identity map of [0, 4 GiB). */
    movl $__boot_pd, %edi
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax             /* present, writable, 2 MiB page */
    movl %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 2b

    movl $__boot_pd, %eax
    orl $3, %eax
    movl %eax, __boot_pdpt
    addl $0x1000, %eax
    movl %eax, __boot_pdpt + 8
    addl $0x1000, %eax
    movl %eax, __boot_pdpt + 16
    addl $0x1000, %eax
    movl %eax, __boot_pdpt + 24
    movl $__boot_pdpt, %eax
    orl $3, %eax
    movl %eax, __boot_pml4

    movl $__boot_pml4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $(1 << 5), %eax         /* PAE */
    movl %eax, %cr4
    movl $0xC0000080, %ecx      /* EFER */
    rdmsr
    orl $(1 << 8), %eax         /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax       /* PG | PE */
    movl %eax, %cr0

    lgdt __boot_gdt_ptr
    ljmp $0x08, $_start64

    .code64
_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $__boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl __boot_magic(%rip), %edi
    movl __boot_info(%rip), %esi
    call kernel_main
3:  cli
    hlt
    jmp 3b

    .section .rodata.boot, "a"
    .balign 8
__boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
__boot_gdt_ptr:
    .short 23
    .long __boot_gdt

    .section .data.boot, "aw"
    .balign 4
__boot_magic:
    .long 0
__boot_info:
    .long 0

    .section .bss.boot, "aw", @nobits
    .balign 4096
__boot_pml4:
    .skip 4096
__boot_pdpt:
    .skip 4096
__boot_pd:
    .skip 4096 * 4
    .global __boot_stack_bottom
__boot_stack_bottom:
    .skip 65536
__boot_stack_top:
