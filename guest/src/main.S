/* User-mode (CPL 3) main program: start info, command line, the hardware
 * report, workload dispatch and the end-of-workload action. */
        .include "defs.inc"
        .text
        .code64

/* Entered from entry.S with iretq: CPL 3, IF=0, RBX = hvm_start_info. */
        .globl user_main
user_main:
        cld
        mov $__bss_start, %edi          /* zero .bss (natively, at CPL 3) */
        mov $__bss_end, %ecx
        sub %edi, %ecx
        xor %eax, %eax
        rep stosb
        movq $64, disk_count            /* defaults */
        movq $W_IDLE, workload
        movq $A_POWEROFF, after
        movq $FILL_SEED_DEFAULT, fill_seed

        /* struct hvm_start_info: magic@0 version@4 cmdline_paddr@24
         * memmap_paddr@40 memmap_entries@48 (version >= 1). */
        test %rbx, %rbx
        jz 2f
        cmpl $PVH_MAGIC, (%rbx)
        jne 2f
        mov 24(%rbx), %rax
        mov %rax, cmdline
        cmpl $1, 4(%rbx)
        jb 1f
        mov 40(%rbx), %rax
        mov %rax, memmap
        mov 48(%rbx), %eax
        mov %rax, memmap_n
1:      PUTS "pvh: magic=ok"
        movl 4(%rbx), %eax
        PDEC " version=", %rax
        PDEC " memmap_entries=", memmap_n
        call newline
        jmp 3f
2:      PUTS "pvh: magic=bad\n"
3:
        /* cmdline: <raw text> */
        mov cmdline, %rsi
        test %rsi, %rsi
        jz 4f
        PUTS "cmdline: "
        mov cmdline, %rdi
        call puts
        call newline
        call parse_cmdline
4:
        /* crash=1: deliberate #UD at CPL 3 (tests the VMM's crash path):
         * the CPL 0 stub prints the panic line and triple-faults. */
        cmpq $0, crash
        je 5f
        PUTS "crash: ud2\n"
        ud2
5:
        call report_cpu
        call report_memmap
        call report_virtio
        call report_pci
        PUTS "report: done\n"

        mov workload, %rax
        cmp $W_AB, %rax
        je workload_ab
        cmp $W_DISK, %rax
        je workload_disk
        cmp $W_FILL, %rax
        je workload_fill
        cmp $W_FILL_TEXT, %rax
        je workload_fill
        cmp $W_REPORT, %rax
        je do_after
        /* idle */
        PUTS "idle: halted\n"
        .globl halt_forever
halt_forever:
1:      hlt                             /* #GP -> CPL 0 handler executes hlt */
        jmp 1b

/* do_after: the after= action at the end of a finite workload. */
        .globl do_after
do_after:
        mov after, %rax
        cmp $A_HALT, %rax
        je halt_forever
        cmp $A_REBOOT, %rax
        je 5f
        /* power-off: 16-bit write of 0x2000 (SLP_TYP=5 | SLP_EN) to 0x604
         * (our VMM; QEMU's q35/piix PM1a_CNT convention), then QEMU
         * microvm's ACPI GED sleep control register (SLP_TYP=5 << 2 |
         * SLP_EN 0x20 = 0x34), then halt if neither worked. */
        mov $0x604, %edx
        mov $0x2000, %eax
        out %ax, %dx
        mov $GED_SLEEP_CTL, %ecx        /* above 2 GiB: via a register */
        movb $0x34, (%rcx)
        /* last resort for QEMU without ACPI: `-device isa-debug-exit` at its
         * default port 0x501 (QEMU exits with status (0 << 1) | 1 = 1) */
        mov $0x501, %edx
        xor %eax, %eax
        out %al, %dx
        jmp halt_forever
5:      /* reboot: 6 to port 0xcf9 (reset control), then microvm's GED
         * reset register (0x42). */
        mov $0xcf9, %edx
        mov $6, %eax
        out %al, %dx
        mov $GED_RESET, %ecx
        movb $0x42, (%rcx)
        jmp halt_forever

/* ------------------------------------------------------------------------
 * Command line. Tokens separated by spaces; unknown tokens are ignored
 * (Linux-style: the line may carry options for other software). */
parse_cmdline:
        push %rbx
        mov cmdline, %rsi
next_token:
        movzbl (%rsi), %ecx
        test %cl, %cl
        jz cmd_done
        call is_sep
        test %eax, %eax
        jz 1f
        inc %rsi
        jmp next_token
1:
        STRADDR %edi, "virtio_mmio.device="
        call prefix
        test %eax, %eax
        jnz opt_virtio
        STRADDR %edi, "pci.ecam="
        call prefix
        test %eax, %eax
        jnz opt_ecam
        STRADDR %edi, "workload="
        call prefix
        test %eax, %eax
        jnz opt_workload
        STRADDR %edi, "after="
        call prefix
        test %eax, %eax
        jnz opt_after
        STRADDR %edi, "ab.mib="
        call prefix
        test %eax, %eax
        jnz opt_ab_mib
        STRADDR %edi, "fill.mib="
        call prefix
        test %eax, %eax
        jnz opt_fill_mib
        STRADDR %edi, "fill.seed="
        call prefix
        test %eax, %eax
        jnz opt_fill_seed
        STRADDR %edi, "disk.count="
        call prefix
        test %eax, %eax
        jnz opt_disk_count
        STRADDR %edi, "disk.bad="
        call prefix
        test %eax, %eax
        jnz opt_disk_bad
        STRADDR %edi, "disk.start="
        call prefix
        test %eax, %eax
        jnz opt_disk_start
        STRADDR %edi, "crash="
        call prefix
        test %eax, %eax
        jnz opt_crash
        STRADDR %edi, "disk.dev="
        call prefix
        test %eax, %eax
        jnz opt_disk_dev
skip:
        call skip_token
        jmp next_token
cmd_done:
        pop %rbx
        ret

opt_virtio:                             /* SIZE@ADDR:IRQ */
        call parse_num
        mov %rax, %r8                   /* size */
        cmpb $'@', (%rsi)
        jne skip
        inc %rsi
        call parse_num
        mov %rax, %r9                   /* address */
        xor %r10d, %r10d                /* irq (optional) */
        cmpb $':', (%rsi)
        jne 1f
        inc %rsi
        call parse_num
        mov %rax, %r10
1:      mov nvirtio, %rbx
        cmp $MAX_VIRTIO, %rbx
        jae skip
        mov %r8, vsize(,%rbx,8)
        mov %r9, vaddr(,%rbx,8)
        mov %r10, virq(,%rbx,8)
        incq nvirtio
        jmp skip

opt_ecam:
        call parse_num
        mov %rax, ecam
        movq $1, have_ecam
        jmp skip

opt_workload:
        STRADDR %edi, "ab"
        call word
        mov $W_AB, %ebx
        test %eax, %eax
        jnz 1f
        STRADDR %edi, "disk"
        call word
        mov $W_DISK, %ebx
        test %eax, %eax
        jnz 1f
        STRADDR %edi, "fill"
        call word
        mov $W_FILL, %ebx
        test %eax, %eax
        jnz 1f
        STRADDR %edi, "fill.text"
        call word
        mov $W_FILL_TEXT, %ebx
        test %eax, %eax
        jnz 1f
        STRADDR %edi, "idle"
        call word
        mov $W_IDLE, %ebx
        test %eax, %eax
        jnz 1f
        STRADDR %edi, "report"
        call word
        mov $W_REPORT, %ebx
        test %eax, %eax
        jz bad_value
1:      mov %rbx, workload
        jmp skip

opt_after:
        STRADDR %edi, "poweroff"
        call word
        mov $A_POWEROFF, %ebx
        test %eax, %eax
        jnz 1f
        STRADDR %edi, "reboot"
        call word
        mov $A_REBOOT, %ebx
        test %eax, %eax
        jnz 1f
        STRADDR %edi, "halt"
        call word
        mov $A_HALT, %ebx
        test %eax, %eax
        jz bad_value
1:      mov %rbx, after
        jmp skip

opt_ab_mib:
        call parse_num
        mov %rax, ab_mib
        jmp skip
opt_fill_mib:
        call parse_num
        mov %rax, fill_mib
        jmp skip
opt_fill_seed:
        call parse_num
        mov %rax, fill_seed
        jmp skip
opt_disk_count:
        call parse_num
        mov %rax, disk_count
        jmp skip
opt_disk_bad:
        call parse_num
        mov %rax, disk_bad
        jmp skip
opt_disk_start:
        call parse_num
        mov %rax, disk_start
        jmp skip
opt_crash:
        call parse_num
        mov %rax, crash
        jmp skip
opt_disk_dev:
        call parse_num
        mov %rax, disk_dev
        movq $1, have_disk_dev
        jmp skip

bad_value:                              /* "cmdline: error=bad-value token=<token>" */
        push %rsi
        PUTS "cmdline: error=bad-value at="
        pop %rsi
        push %rsi
1:      movzbl (%rsi), %ecx             /* print the rest of the token */
        call is_sep
        test %eax, %eax
        jnz 2f
        mov %ecx, %edi
        push %rsi
        call putc
        pop %rsi
        inc %rsi
        jmp 1b
2:      call newline
        pop %rsi
        jmp skip

/* ------------------------------------------------------------------------
 * memmap: one line per PVH memory map entry (addr@0 size@8 type@16, 24 B). */
report_memmap:
        push %rbx
        push %r12
        mov memmap, %rbx
        mov memmap_n, %r12
        test %rbx, %rbx
        jz 2f
1:      test %r12, %r12
        jz 2f
        cmpq $0, 8(%rbx)                /* skip empty entries (qboot adds one) */
        je 3f
        PUTS "memmap:"
        PHEX " addr=", (%rbx)
        PHEX " size=", 8(%rbx)
        movl 16(%rbx), %eax
        PDEC " type=", %rax
        call newline
3:      add $24, %rbx
        dec %r12
        jmp 1b
2:      pop %r12
        pop %rbx
        ret

/* ------------------------------------------------------------------------
 * virtio-mmio report. For each virtio_mmio.device= entry:
 *   virtio: index=I addr=0x.. size=0x.. irq=N magic=0x.. version=N device=N vendor=0x..
 * and for block devices (device id 2) the virtio-blk lines (report_blk). */
report_virtio:
        push %rbx
        push %r12
        xor %ebx, %ebx
1:      cmp nvirtio, %rbx
        jae 9f
        mov vaddr(,%rbx,8), %r12
        PDEC "virtio: index=", %rbx
        PHEX " addr=", %r12
        mov vsize(,%rbx,8), %rax
        PHEX " size=", %rax
        mov virq(,%rbx,8), %rax
        PDEC " irq=", %rax
        movl 0x00(%r12), %eax
        PHEX " magic=", %rax
        movl 0x04(%r12), %eax
        PDEC " version=", %rax
        movl 0x08(%r12), %eax
        PDEC " device=", %rax
        movl 0x0c(%r12), %eax
        PHEX " vendor=", %rax
        call newline
        cmpl $VIRTIO_MAGIC, 0x00(%r12)
        jne 2f
        cmpl $2, 0x08(%r12)
        jne 2f
        mov %rbx, %rdi
        mov %r12, %rsi
        call report_blk
2:      inc %rbx
        jmp 1b
9:      pop %r12
        pop %rbx
        ret

/* ------------------------------------------------------------------------
 * CPU report, from the CPUID values the CPL 0 part stored (cpuid_cpl0):
 *   cpu: vendor=V family=F model=M stepping=S max_leaf=0x.. max_ext_leaf=0x..
 *   cpuid: leaf=0xL eax=0x.. ebx=0x.. ecx=0x.. edx=0x..   (1, 7, 0xd, 0x80000001)
 * family/model/stepping are decoded from leaf 1 EAX as the manuals say
 * (extended family when the family is 0xf; extended model when it is 6
 * or 0xf). */
report_cpu:
        push %rbx
        push %r12
        PUTS "cpu: vendor="
        xor %ebx, %ebx
1:      cmp $12, %ebx                   /* EBX, EDX, ECX of leaf 0 */
        jae 2f
        mov %ebx, %eax
        shr $2, %eax
        mov cpu_vendor_regs(%rax), %al
        movzbl %al, %eax
        mov %ebx, %ecx
        and $3, %ecx
        movzbl cpuid_cpl0(%rax,%rcx), %edi
        call putc
        inc %ebx
        jmp 1b
2:      movl cpuid_cpl0 + 16, %r12d     /* leaf 1 EAX */
        mov %r12d, %eax
        shr $8, %eax
        and $0xf, %eax                  /* base family */
        mov %eax, %ebx
        cmp $0xf, %eax
        jne 3f
        mov %r12d, %ecx
        shr $20, %ecx
        and $0xff, %ecx
        add %ecx, %eax
3:      PDEC " family=", %rax
        mov %r12d, %eax
        shr $4, %eax
        and $0xf, %eax
        cmp $6, %ebx
        je 4f
        cmp $0xf, %ebx
        jne 5f
4:      mov %r12d, %ecx
        shr $12, %ecx
        and $0xf0, %ecx
        or %ecx, %eax
5:      PDEC " model=", %rax
        mov %r12d, %eax
        and $0xf, %eax
        PDEC " stepping=", %rax
        movl cpuid_cpl0, %eax
        PHEX " max_leaf=", %rax
        movl cpuid_cpl0 + 48, %eax
        PHEX " max_ext_leaf=", %rax
        call newline
        mov $1, %edi                    /* leaf 1: slot 1 */
        mov $1, %esi
        call report_leaf
        cmpl $7, cpuid_cpl0
        jb 6f
        mov $7, %edi
        mov $2, %esi
        call report_leaf
6:      cmpl $0xd, cpuid_cpl0
        jb 7f
        mov $0xd, %edi
        mov $5, %esi
        call report_leaf
7:      cmpl $0x80000001, cpuid_cpl0 + 48
        jb 8f
        mov $0x80000001, %edi
        mov $4, %esi
        call report_leaf
8:      pop %r12
        pop %rbx
        ret

/* report_leaf(edi = leaf, esi = slot in cpuid_cpl0). */
report_leaf:
        push %rbx
        push %r12
        mov %edi, %r12d
        mov %esi, %ebx
        shl $4, %ebx
        PHEX "cpuid: leaf=", %r12
        movl cpuid_cpl0(%rbx), %eax
        PHEX " eax=", %rax
        movl cpuid_cpl0 + 4(%rbx), %eax
        PHEX " ebx=", %rax
        movl cpuid_cpl0 + 8(%rbx), %eax
        PHEX " ecx=", %rax
        movl cpuid_cpl0 + 12(%rbx), %eax
        PHEX " edx=", %rax
        call newline
        pop %r12
        pop %rbx
        ret

/* report_blk(rdi = index, rsi = base). Resets the device, sets
 * ACKNOWLEDGE | DRIVER, reads the 64-bit offered features, the config
 * space and QueueNumMax of each queue, then resets the device again.
 * Config fields are read with aligned 32-bit accesses. */
report_blk:
        push %rbx
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rdi, %rbx                  /* index */
        mov %rsi, %r12                  /* base */
        movl $0, 0x70(%r12)             /* Status = 0: reset */
        movl $1, 0x70(%r12)             /* ACKNOWLEDGE */
        movl $3, 0x70(%r12)             /* | DRIVER */
        movl $1, 0x14(%r12)             /* DeviceFeaturesSel = 1: bits 63:32 */
        movl 0x10(%r12), %r13d
        shl $32, %r13
        movl $0, 0x14(%r12)             /* bits 31:0 */
        movl 0x10(%r12), %eax
        or %rax, %r13                   /* r13 = offered features */

        PDEC "virtio-blk: index=", %rbx
        PHEX " features=", %r13
        mov %r13, %rax
        shr $32, %rax
        and $1, %eax
        PDEC " version_1=", %rax
        mov %r13, %rax
        shr $40, %rax
        and $1, %eax
        PDEC " ring_reset=", %rax
        mov %r13, %rax
        shr $12, %rax
        and $1, %eax
        PDEC " mq=", %rax
        mov %r13, %rax
        shr $9, %rax
        and $1, %eax
        PDEC " flush=", %rax
        mov %r13, %rax
        shr $11, %rax
        and $1, %eax
        PDEC " config_wce=", %rax
        mov %r13, %rax
        shr $13, %rax
        and $1, %eax
        PDEC " discard=", %rax
        mov %r13, %rax
        shr $14, %rax
        and $1, %eax
        PDEC " write_zeroes=", %rax
        mov %r13, %rax
        shr $5, %rax
        and $1, %eax
        PDEC " ro=", %rax
        call newline

        /* virtio_blk_config: capacity@0 (u64) size_max@8 seg_max@12
         * geometry@16 blk_size@20 topology@24 writeback@32 (u8)
         * num_queues@34 (u16) max_discard_sectors@36 max_discard_seg@40
         * discard_sector_alignment@44 max_write_zeroes_sectors@48
         * max_write_zeroes_seg@52 */
        PDEC "virtio-blk-config: index=", %rbx
        movl 0x104(%r12), %eax
        shl $32, %rax
        movl 0x100(%r12), %ecx
        or %rcx, %rax
        PDEC " capacity=", %rax
        movl 0x108(%r12), %eax
        PDEC " size_max=", %rax
        movl 0x10c(%r12), %eax
        PDEC " seg_max=", %rax
        movl 0x114(%r12), %eax
        PDEC " blk_size=", %rax
        movl 0x120(%r12), %r14d         /* writeback | unused << 8 | num_queues << 16 */
        movzbl %r14b, %eax
        PDEC " writeback=", %rax
        shr $16, %r14d                  /* num_queues: valid only with MQ */
        bt $12, %r13
        jc 1f
        mov $1, %r14d
1:      PDEC " num_queues=", %r14
        movl 0x124(%r12), %eax
        PDEC " max_discard_sectors=", %rax
        movl 0x128(%r12), %eax
        PDEC " max_discard_seg=", %rax
        movl 0x12c(%r12), %eax
        PDEC " discard_sector_alignment=", %rax
        movl 0x130(%r12), %eax
        PDEC " max_write_zeroes_sectors=", %rax
        movl 0x134(%r12), %eax
        PDEC " max_write_zeroes_seg=", %rax
        call newline

        /* QueueNumMax of each queue (at most 64 reported). */
        cmp $64, %r14
        jbe 2f
        mov $64, %r14d
2:      xor %r15d, %r15d
3:      cmp %r14, %r15
        jae 5f
        movl %r15d, 0x30(%r12)          /* QueueSel */
        PDEC "virtio-blk-queue: index=", %rbx
        PDEC " queue=", %r15
        movl 0x34(%r12), %eax           /* QueueNumMax */
        PDEC " max=", %rax
        call newline
        inc %r15
        jmp 3b
        /* The serial number (VIRTIO_BLK_T_GET_ID), on a modern transport
         * offering VERSION_1 (a legacy one is only described). */
5:      bt $32, %r13
        jnc 4f
        cmpl $2, 4(%r12)
        jne 4f
        mov %rbx, %rdi
        mov %r12, %rsi
        call blk_get_id
4:      movl $0, 0x70(%r12)             /* reset again */
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

/* ------------------------------------------------------------------------
 * PCI report through ECAM (bus 0 only). For each present function:
 *   pci: bdf=00:DD.F vendor=0x.. device=0x.. class=0x.. header=0x..
 * for one with a PCI Express capability (id 0x10, walked from 0x34):
 *   pcie: bdf=00:DD.F cap=0x.. devcap=0x..   (Device Capabilities)
 * and for one with an AER extended capability (id 1, walked from 0x100):
 *   aer: bdf=00:DD.F cap=0x.. uncor_mask=0x.. uncor_sever=0x.. */
report_pci:
        cmpq $0, have_ecam
        jne 1f
        ret
1:      push %rbx
        push %r12
        push %r13
        push %r14
        xor %r12d, %r12d                /* device */
dev_loop:
        cmp $32, %r12
        jae pci_done
        xor %r13d, %r13d                /* function */
fn_loop:
        mov %r12, %rbx
        shl $15, %rbx
        mov %r13, %rax
        shl $12, %rax
        or %rax, %rbx
        add ecam, %rbx                  /* rbx = function's config space */
        movl (%rbx), %eax
        cmp $0xffff, %ax
        je fn_absent
        PUTS "pci:"
        call put_bdf
        movzwl (%rbx), %eax
        PHEX " vendor=", %rax
        movzwl 2(%rbx), %eax
        PHEX " device=", %rax
        movl 8(%rbx), %eax
        shr $8, %eax
        PHEX " class=", %rax
        movzbl 0xe(%rbx), %eax
        PHEX " header=", %rax
        call newline
        call report_pcie
        call report_aer
        test %r13, %r13                 /* function 0 without the multi-function */
        jnz fn_next                     /* bit: skip functions 1-7 */
        testb $0x80, 0xe(%rbx)
        jz dev_next
        jmp fn_next
fn_absent:
        test %r13, %r13
        jz dev_next
fn_next:
        inc %r13
        cmp $8, %r13
        jb fn_loop
dev_next:
        inc %r12
        jmp dev_loop
pci_done:
        pop %r14
        pop %r13
        pop %r12
        pop %rbx
        ret

/* put_bdf(): " bdf=00:DD.F" from r12 (device) and r13 (function). */
put_bdf:
        PUTS " bdf=00:"
        mov %r12, %rax
        shr $4, %rax
        movzbl hexdig(%rax), %edi
        call putc
        mov %r12, %rax
        and $15, %eax
        movzbl hexdig(%rax), %edi
        call putc
        mov $'.', %edi
        call putc
        movzbl hexdig(%r13), %edi
        jmp putc

/* report_pcie(): walk the capability list of the function at rbx for the
 * PCI Express capability; print its Device Capabilities register (bit 5:
 * Extended Tag Field Supported, the `x-pcie-ext-tag` property). */
report_pcie:
        testb $0x10, 6(%rbx)            /* status: capabilities list */
        jz 9f
        movzbl 0x34(%rbx), %r14d
        mov $48, %ecx                   /* loop guard */
1:      and $0xfc, %r14d
        cmp $0x40, %r14d
        jb 9f
        cmpb $0x10, (%rbx,%r14)         /* PCI_CAP_ID_EXP */
        je 2f
        movzbl 1(%rbx,%r14), %r14d      /* next pointer */
        dec %ecx
        jnz 1b
9:      ret
2:      PUTS "pcie:"
        call put_bdf
        PHEX " cap=", %r14
        movl 4(%rbx,%r14), %eax         /* PCI_EXP_DEVCAP */
        PHEX " devcap=", %rax
        jmp newline

/* report_aer(): walk the extended capabilities of the function at rbx. */
report_aer:
        mov $0x100, %r14d               /* current capability offset */
        mov $64, %ecx                   /* loop guard */
1:      movl (%rbx,%r14), %eax
        test %eax, %eax
        jz 9f
        cmp $-1, %eax
        je 9f
        cmp $1, %ax                     /* PCI_EXT_CAP_ID_ERR */
        je 2f
        shr $20, %eax                   /* next pointer, bits 31:20 */
        and $0xffc, %eax
        cmp $0x100, %eax
        jb 9f
        mov %eax, %r14d
        dec %ecx
        jnz 1b
9:      ret
2:      PUTS "aer:"
        call put_bdf
        PHEX " cap=", %r14
        movl 8(%rbx,%r14), %eax         /* PCI_ERR_UNCOR_MASK */
        PHEX " uncor_mask=", %rax
        movl 0xc(%rbx,%r14), %eax       /* PCI_ERR_UNCOR_SEVER */
        PHEX " uncor_sever=", %rax
        jmp newline

        .section .rodata
hexdig:
        .ascii "0123456789abcdef"

/* ------------------------------------------------------------------------
 * State (zeroed by user_main). */
        .bss
        .p2align 3
        .globl cmdline, memmap, memmap_n, nvirtio, vaddr, vsize, virq
        .globl ecam, have_ecam, workload, after, ab_mib, fill_mib, fill_seed
        .globl disk_count, disk_bad, disk_start, disk_dev, have_disk_dev, crash
cmdline:        .quad 0
memmap:         .quad 0
memmap_n:       .quad 0
nvirtio:        .quad 0
vaddr:          .fill MAX_VIRTIO, 8, 0
vsize:          .fill MAX_VIRTIO, 8, 0
virq:           .fill MAX_VIRTIO, 8, 0
ecam:           .quad 0
have_ecam:      .quad 0
workload:       .quad 0
after:          .quad 0
ab_mib:         .quad 0
fill_mib:       .quad 0
fill_seed:      .quad 0
disk_count:     .quad 0
disk_bad:       .quad 0
disk_start:     .quad 0
disk_dev:       .quad 0
have_disk_dev:  .quad 0
crash:          .quad 0
