/* The CPL 0 part of the embedded guest: PVH entry, long mode, GDT/TSS/IDT,
 * the drop to CPL 3, and the exception handlers.
 *
 * On this machine's KVM (PVM backend) CPL 0 code is emulated at about one
 * million instructions per second, so this file is written to execute as few
 * instructions as possible:
 *   - page tables, GDT, TSS and IDT are fully pre-built in the image's data
 *     (the linker script computes the split descriptor address fields), so
 *     the set-up is ~30 instructions instead of thousands of loop iterations;
 *   - descriptors and page-table entries have their Accessed/Dirty bits
 *     pre-set so neither the CPU nor the emulator needs to write them back;
 *   - only plain moves, control-register/MSR writes, descriptor-table loads
 *     and iretq are used (the emulator fails on cmpxchg16b, xrstor, int3).
 * Everything else (parsing, the report, workloads) runs at CPL 3 natively.
 */
        .include "defs.inc"

/* ------------------------------------------------------------------------
 * PVH ELF note: Xen XEN_ELFNOTE_PHYS32_ENTRY (type 18), 4-byte descriptor
 * holding the 32-bit physical entry point. The PT_NOTE segment must have a
 * 4-byte alignment (QEMU aligns the name to the segment's p_align).
 */
        .section .note.Xen, "a"
        .p2align 2
        .long 4                 /* n_namesz: "Xen\0" */
        .long 4                 /* n_descsz */
        .long 18                /* n_type: XEN_ELFNOTE_PHYS32_ENTRY */
        .asciz "Xen"
        .long pvh_entry

/* ------------------------------------------------------------------------
 * Entry. PVH state: 32-bit protected mode, flat CS/DS/ES/SS, paging off,
 * interrupts off, EBX = physical address of struct hvm_start_info.
 */
        .section .text.entry, "ax"
        .code32
        .globl pvh_entry
pvh_entry:
        lgdt gdt_ptr                    /* 32-bit base: fine, GDT is < 4 GiB */
        mov $pml4, %eax                 /* pre-built identity map of 0..4 GiB */
        mov %eax, %cr3
        mov $0x20, %eax                 /* CR4 = PAE only (no OSFXSR: we never use SSE) */
        mov %eax, %cr4
        mov $0xc0000080, %ecx           /* IA32_EFER: write LME directly, no rdmsr */
        mov $0x100, %eax                /* (nothing else in EFER is needed) */
        xor %edx, %edx
        wrmsr
        mov $0x80000031, %eax           /* CR0 = PG | NE | ET | PE: enters long mode */
        mov %eax, %cr0
        ljmp $KCODE, $long_entry        /* reload CS with the 64-bit code segment */

        .code64
long_entry:
        mov $KDATA, %eax
        mov %eax, %ss
        mov $kstack_top, %esp           /* zero-extends into rsp */
        /* ltr marks the TSS descriptor busy in the GDT; clear the busy bit
         * first so a reboot that does not reload the image still works. */
        movb $0x89, gdt_tss + 5
        mov $TSSSEL, %eax
        ltr %ax
        lidt idt_ptr
        mov %ebx, %ebx                  /* start-info pointer: clear bits 63:32 */

        /* First serial line, printed here (not from CPL 3) because each
         * trapped `out` from CPL 3 costs ~48 us while one here is one
         * emulated instruction plus the I/O exit. Unrolled: no loop. */
        mov $COM1, %edx
        .irp c, 98,111,111,116,58,32,111,107,10    /* "boot: ok\n" */
        mov $\c, %al
        out %al, %dx
        .endr

        /* CPUID as a guest kernel reads it: at CPL 0 this backend returns
         * the VMM's configured values for what KVM controls (family, model,
         * stepping, KVM-supported features); at CPL 3 `cpuid` runs natively
         * and shows the physical host. Leaves 0, 1, 7.0, 0x80000000,
         * 0x80000001, 0xd.0 go to cpuid_cpl0 (16 bytes each) for the
         * report; leaves above the maximum are stored too and not printed. */
        mov %ebx, %esi                  /* keep the start-info pointer */
        mov $cpuid_cpl0, %edi
        .irp leaf, 0, 1, 7, 0x80000000, 0x80000001, 0xd
        mov $\leaf, %eax
        xor %ecx, %ecx
        cpuid
        mov %eax, (%edi)
        mov %ebx, 4(%edi)
        mov %ecx, 8(%edi)
        mov %edx, 12(%edi)
        add $16, %edi
        .endr
        mov %esi, %ebx

        /* iretq frame for CPL 3: SS, RSP, RFLAGS (IF=0, IOPL=0), CS, RIP.
         * RBX still holds the start-info pointer for user_main. */
        pushq $(UDATA | 3)
        pushq $ustack_top
        pushq $2
        pushq $(UCODE | 3)
        pushq $user_main
        iretq

/* ------------------------------------------------------------------------
 * #GP handler: emulates the port I/O instructions and `hlt` that CPL 3 code
 * uses (they fault with #GP at CPL 3: IOPL is 0 and hlt is privileged).
 * The faulting instruction's operands are still live in the user's
 * registers (al/ax/eax, dx), so the handler just executes the instruction
 * itself, advances the saved RIP past it and returns. Frame on entry:
 * error code, RIP, CS, RFLAGS, RSP, SS. Only rcx is used (saved).
 * The common path (`out dx, al`: serial output) is 9 instructions.
 */
        .p2align 4
        .globl gp_handler
gp_handler:
        push %rcx
        mov 16(%rsp), %rcx              /* faulting RIP */
        cmpb $0xee, (%rcx)              /* EE: out dx, al */
        jne 1f
        out %al, %dx
gp_skip1:
        incq 16(%rsp)                   /* skip the 1-byte instruction */
        pop %rcx
        add $8, %rsp                    /* drop the error code */
        iretq
1:      cmpb $0xf4, (%rcx)              /* F4: hlt -> idle; IF=0, the vCPU sleeps */
        jne 2f
        hlt                             /* in the VMM until an NMI/reset */
        jmp gp_skip1
2:      cmpb $0xec, (%rcx)              /* EC: in al, dx */
        jne 3f
        in %dx, %al
        jmp gp_skip1
3:      cmpb $0xef, (%rcx)              /* EF: out dx, eax */
        jne 4f
        out %eax, %dx
        jmp gp_skip1
4:      cmpb $0xed, (%rcx)              /* ED: in eax, dx */
        jne 5f
        in %dx, %eax
        jmp gp_skip1
5:      cmpb $0x66, (%rcx)              /* 66 prefix: 16-bit forms */
        jne 9f
        cmpb $0xef, 1(%rcx)             /* 66 EF: out dx, ax */
        jne 6f
        out %ax, %dx
        jmp gp_skip2
6:      cmpb $0xed, 1(%rcx)             /* 66 ED: in ax, dx */
        jne 9f
        in %dx, %ax
gp_skip2:
        addq $2, 16(%rsp)
        pop %rcx
        add $8, %rsp
        iretq
9:      pop %rcx                        /* anything else: a real #GP */
        pushq $13
        jmp panic_common

/* ------------------------------------------------------------------------
 * Exception stubs for vectors 0-31 (except 13), 16 bytes each so the IDT
 * entries can be pre-built as isr_stubs + 16 * vector. Vectors without a
 * CPU-pushed error code push a 0 so the frame is uniform:
 * [rsp] = vector, error, RIP, CS, RFLAGS, RSP, SS.
 */
        .p2align 4
        .globl isr_stubs
isr_stubs:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .p2align 4
        .if (\v == 8) || (\v == 10) || (\v == 11) || (\v == 12) || (\v == 13) || (\v == 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
        .else
        pushq $0
        .endif
        pushq $\v
        jmp panic_common
        .endr
        .p2align 4
        .globl isr_stubs_end
isr_stubs_end:

/* panic_common: print "panic: vector=N rip=0x.. err=0x.. cr2=0x.." and
 * triple-fault (the VMM reports a crash; QEMU needs -no-reboot to exit).
 * Runs at CPL 0 on the kernel stack; reuses the user-mode print helpers,
 * whose `out` executes directly at CPL 0. Only on the failure path, so the
 * emulated instruction count does not matter here. */
panic_common:
        mov $10, %edi                   /* end any partial line first */
        call putc
        PDEC "panic: vector=", (%rsp)
        PHEX " rip=", 16(%rsp)
        PHEX " err=", 8(%rsp)
        mov %cr2, %rax
        PHEX " cr2=", %rax
        PHEX " cs=", 24(%rsp)
        mov $10, %edi
        call putc
        .globl triple_fault
triple_fault:
        lidt null_idt_ptr               /* no IDT: the next exception cannot */
        ud2                             /* be delivered -> #DF -> shutdown */

/* ------------------------------------------------------------------------
 * Descriptor tables (pre-built).
 */
        .section .data, "aw"
        .p2align 3
gdt:
        .quad 0                         /* 0x00 null */
        .quad 0x00af9b000000ffff        /* 0x08 kernel code: 64-bit, DPL0, accessed */
        .quad 0x00cf93000000ffff        /* 0x10 kernel data: DPL0, writable, accessed */
        .quad 0x00cff3000000ffff        /* 0x18 user data: DPL3, writable, accessed */
        .quad 0x00affb000000ffff        /* 0x20 user code: 64-bit, DPL3, accessed */
gdt_tss:                                /* 0x28 64-bit TSS descriptor (16 bytes) */
        .word tss_end - tss - 1         /* limit 15:0 (includes the I/O bitmap) */
        .word __tss_base_0_15           /* base 15:0  (linker script) */
        .byte __tss_base_16_23          /* base 23:16 */
        .byte 0x89                      /* P, DPL0, type 9: available 64-bit TSS */
        .byte 0                         /* limit 19:16, flags */
        .byte __tss_base_24_31          /* base 31:24 */
        .long 0                         /* base 63:32 */
        .long 0
gdt_end:

gdt_ptr:                                /* loaded in 32-bit mode: 2 + 4 bytes */
        .word gdt_end - gdt - 1
        .long gdt

        .p2align 3
idt_ptr:                                /* loaded in 64-bit mode: 2 + 8 bytes */
        .word idt_end - idt - 1
        .quad idt
null_idt_ptr:
        .word 0
        .quad 0

/* 64-bit TSS: RSP0 (stack for exceptions from CPL 3) and an I/O permission
 * bitmap allowing CPL 3 to use ports 0-0xfff directly. Measured on this
 * machine's KVM (PVM): IOPL=3 in RFLAGS does not stick, but the TSS bitmap
 * is honoured, and a permitted `out` from CPL 3 costs only the I/O exit,
 * 2-4x less than the #GP trap + emulated handler. Ports above 0xfff lie
 * beyond the TSS limit and still #GP; the #GP handler emulates them (and
 * all ports, should a hypervisor ignore the bitmap). */
        .p2align 4
        .globl tss
tss:
        .long 0
        .quad kstack_top                /* RSP0 */
        .quad 0, 0                      /* RSP1, RSP2 */
        .quad 0
        .quad 0, 0, 0, 0, 0, 0, 0       /* IST1-7 */
        .quad 0
        .word 0
        .word iobitmap - tss            /* I/O map base */
iobitmap:
        /* build.rs also links a test variant with TRAP_IO=1: an all-ones
         * bitmap, so every port access goes through the #GP emulator. */
        .ifndef TRAP_IO
        .set TRAP_IO, 0
        .endif
        .fill 0x1000 / 8, 1, (0xff * TRAP_IO) /* ports 0-0xfff: allowed (bit clear) */
        .byte 0xff                      /* required terminator byte */
tss_end:

/* IDT: 32 interrupt gates (DPL0, so `int n` from CPL 3 cannot use them),
 * handler address split with linker-script symbols. Vector 13 goes to
 * gp_handler, all others to their isr_stubs entry. */
        .p2align 4
idt:
        .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .if \v == 13
        .word __gp_lo
        .else
        .word __stubs_lo + 16 * \v      /* no carry: asserted in guest.ld */
        .endif
        .word KCODE
        .byte 0                         /* IST 0 */
        .byte 0x8e                      /* P, DPL0, 64-bit interrupt gate */
        .if \v == 13
        .word __gp_hi
        .else
        .word __stubs_hi
        .endif
        .long 0                         /* offset 63:32 */
        .long 0
        .endr
idt_end:

/* ------------------------------------------------------------------------
 * Page tables: identity map of 0..4 GiB with 2 MiB pages, all entries
 * Present | Writable | User (so CPL 3 reaches RAM and MMIO) with Accessed
 * and Dirty pre-set. PML4[0] -> PDPT, PDPT[0..3] -> 4 page directories.
 */
        .section .data.pagetables, "aw"
        .p2align 12
pml4:
        .quad pdpt + 0x27               /* P | RW | US | A */
        .fill 511, 8, 0
pdpt:
        .quad pd + 0x0000 + 0x27
        .quad pd + 0x1000 + 0x27
        .quad pd + 0x2000 + 0x27
        .quad pd + 0x3000 + 0x27
        .fill 508, 8, 0
pd:
        .set n, 0
        .rept 2048
        .quad (n << 21) + 0xe7          /* P | RW | US | A | D | PS (2 MiB) */
        .set n, n + 1
        .endr

/* ------------------------------------------------------------------------
 * Stacks (not part of the file image; never need zeroing).
 */
        .section .stack, "aw", @nobits
        .p2align 12
        .space 4096
        .globl kstack_top
kstack_top:
        .space 65536
        .globl ustack_top
ustack_top:
