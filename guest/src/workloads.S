/* User-mode (CPL 3) workloads: `ab` (the migration memory workload),
 * `fill`/`fill.text` (one pass of PRNG data over RAM, for transfer
 * benchmarks) and `disk` (a polled virtio-blk driver over virtio-mmio v2). */
        .include "defs.inc"
        .text
        .code64

/* ------------------------------------------------------------------------
 * user_range(rdi = MiB limit, 0 = none) -> rax = start, rdx = end: the RAM
 * range of `ab` and `fill`. start = __image_end (the first page after
 * everything the guest uses); end = end of the PVH memmap RAM entry (type 1)
 * containing start, capped at 4 GiB (the identity-mapped range) and at
 * start + limit MiB if given (without a memmap RAM entry containing start,
 * only the limit defines it), rounded down to 4 KiB. end <= start: no usable
 * memory. Clobbers rcx, rsi, rdi, r8. */
user_range:
        mov %rdi, %r8                   /* MiB limit */
        mov $__image_end, %esi          /* start */
        xor %edx, %edx                  /* end (0: not found) */
        mov memmap, %rdi
        mov memmap_n, %rcx
        test %rdi, %rdi
        jz 3f
1:      test %rcx, %rcx
        jz 3f
        cmpl $1, 16(%rdi)               /* RAM */
        jne 2f
        mov (%rdi), %rax
        cmp %rax, %rsi
        jb 2f
        add 8(%rdi), %rax
        cmp %rax, %rsi
        jae 2f
        mov %rax, %rdx
        jmp 3f
2:      add $24, %rdi
        dec %rcx
        jmp 1b
3:      mov $0x100000000, %rax          /* only 0..4 GiB is mapped */
        test %rdx, %rdx                 /* no RAM entry found: usable only */
        jnz 4f                          /* with an explicit MiB limit */
        test %r8, %r8
        jz 5f
        mov %rax, %rdx
4:      cmp %rax, %rdx
        jbe 7f
        mov %rax, %rdx
7:      mov %r8, %rax
        test %rax, %rax
        jz 5f
        shl $20, %rax
        add %rsi, %rax
        cmp %rax, %rdx
        jbe 5f
        mov %rax, %rdx
5:      and $~0xfff, %rdx
        mov %rsi, %rax
        ret

/* ------------------------------------------------------------------------
 * ab: increment the first byte of every 4 KiB page of [start, end) forever,
 * in address order, so that at any instant every page's byte equals its
 * predecessor's or is one less (mod 256), with exactly one step.
 * [start, end) = user_range(ab.mib).
 * The range's first bytes are set to 0 first, then
 *   ab: start=0x.. pages=N
 * is printed, then the passes run; `ab: pass=N` (N = completed passes) is
 * printed after pass 1 and then after any pass that ends at least 2^30 TSC
 * ticks after the previous progress line. */
        .globl workload_ab
workload_ab:
        mov ab_mib, %rdi
        call user_range
        mov %rax, %r12                  /* start */
        mov %rdx, %r13                  /* end */
        cmp %r12, %r13
        ja 6f
        PUTS "ab: error=no-memory\n"
        jmp halt_forever
6:      mov %r13, %r14
        sub %r12, %r14
        shr $12, %r14                   /* pages */
        mov %r12, %rdi                  /* initial pass: all first bytes = 0 */
        mov %r14, %rcx
7:      movb $0, (%rdi)
        add $4096, %rdi
        dec %rcx
        jnz 7b
        PHEX "ab: start=", %r12
        PDEC " pages=", %r14
        call newline
        xor %r15d, %r15d                /* completed passes */
        call tsc
        mov %rax, %rbp                  /* time of the last progress line */
ab_pass:
        mov %r12, %rdi
        mov %r14, %rcx
1:      incb (%rdi)
        add $4096, %rdi
        dec %rcx
        jnz 1b
        inc %r15
        cmp $1, %r15
        je 2f
        call tsc
        sub %rbp, %rax
        shr $PROGRESS_SHIFT, %rax
        jz ab_pass
2:      PDEC "ab: pass=", %r15
        call newline
        call tsc
        mov %rax, %rbp
        jmp ab_pass

/* ------------------------------------------------------------------------
 * fill / fill.text: write PRNG data once to every 4 KiB page of
 * [start, end) = user_range(fill.mib), in address order, with 8-byte stores,
 * then idle (halt, without an `idle:` line):
 *   fill: start=0x.. pages=N kind=random|text seed=0x..
 *   fill: done pages=N start=0x.. seed=0x.. kind=random|text
 * The PRNG is splitmix64 as a counter: output n (n = 1, 2, ...) is
 * mix(seed + n * GOLDEN) (vmm_guest::splitmix64).
 *   random: qword i of the range (i = 0, 1, ...) = output i + 1.
 *   text: words from fill_words (below) separated by spaces and newlines;
 *     each output gives 8 one-byte choices, low byte first: word = bits 0-4,
 *     separator '\n' when bits 5-7 are 0 (1 in 8), else ' '. In each page,
 *     words are written from offset 0 while an 8-byte slot still fits; the
 *     rest of the page is spaces and its last byte '\n'. The choices run on
 *     across pages (vmm_guest::fill_data is the model). */
        .set GOLDEN, 0x9e3779b97f4a7c15
        .set MIX1, 0xbf58476d1ce4e5b9
        .set MIX2, 0x94d049bb133111eb

/* MIX reg: reg = splitmix64's finalizer of reg (clobbers rdx; MIX1 in r10,
 * MIX2 in r11). */
.macro MIX r:req
        mov \r, %rdx
        shr $30, %rdx
        xor %rdx, \r
        imul %r10, \r
        mov \r, %rdx
        shr $27, %rdx
        xor %rdx, \r
        imul %r11, \r
        mov \r, %rdx
        shr $31, %rdx
        xor %rdx, \r
.endm

        .globl workload_fill
workload_fill:
        mov fill_mib, %rdi
        call user_range
        mov %rax, %r12                  /* start */
        mov %rdx, %r13                  /* end */
        cmp %r12, %r13
        ja 1f
        PUTS "fill: error=no-memory\n"
        jmp halt_forever
1:      mov %r13, %r14
        sub %r12, %r14
        shr $12, %r14                   /* pages */
        PHEX "fill: start=", %r12
        PDEC " pages=", %r14
        call put_fill_kind
        PHEX " seed=", fill_seed
        call newline
        mov %r12, %rdi
        mov %r14, %rsi
        mov fill_seed, %r8
        cmpq $W_FILL_TEXT, workload
        je 2f
        call fill_random
        jmp 3f
2:      call fill_text
3:      PDEC "fill: done pages=", %r14
        PHEX " start=", %r12
        PHEX " seed=", fill_seed
        call put_fill_kind
        call newline
        jmp halt_forever

put_fill_kind:
        STRADDR %edi, " kind=random"
        cmpq $W_FILL_TEXT, workload
        jne 1f
        STRADDR %edi, " kind=text"
1:      jmp puts

/* fill_random(rdi = start, rsi = pages, r8 = seed). */
fill_random:
        mov $GOLDEN, %r9
        mov $MIX1, %r10
        mov $MIX2, %r11
        shl $9, %rsi                    /* qwords */
1:      add %r9, %r8
        mov %r8, %rax
        MIX %rax
        mov %rax, (%rdi)
        add $8, %rdi
        dec %rsi
        jnz 1b
        ret

/* fill_text(rdi = start, rsi = pages, r8 = seed). Each fill_words slot is
 * the word padded with spaces to 7 bytes, then byte 7 = word length + 1
 * (the advance): storing the whole slot and then the separator at the
 * word's end leaves byte 7 to be overwritten by the next slot or the
 * page's trailing spaces. */
fill_text:
        push %rbx
        push %rbp
        push %r12
        push %r13
        push %r15
        mov $GOLDEN, %r9
        mov $MIX1, %r10
        mov $MIX2, %r11
        mov $'\n', %r15d
        xor %ebx, %ebx                  /* choices left in rbp */
        xor %ebp, %ebp
1:      lea 4096(%rdi), %r12            /* page end */
        lea -8(%r12), %r13              /* last slot position */
2:      test %ebx, %ebx
        jnz 3f
        add %r9, %r8                    /* next output: 8 choices */
        mov %r8, %rbp
        MIX %rbp
        mov $8, %ebx
3:      movzbl %bpl, %eax               /* choice */
        shr $8, %rbp
        dec %ebx
        mov %eax, %ecx
        and $31, %ecx
        mov fill_words(,%rcx,8), %rdx
        mov %rdx, (%rdi)
        shr $56, %rdx                   /* advance */
        add %rdx, %rdi
        mov $' ', %edx
        cmp $0x20, %eax
        cmovb %r15d, %edx
        mov %dl, -1(%rdi)               /* separator */
        cmp %r13, %rdi
        jbe 2b
4:      cmp %r12, %rdi                  /* rest of the page: spaces */
        jae 5f
        movb $' ', (%rdi)
        inc %rdi
        jmp 4b
5:      movb $'\n', -1(%r12)
        mov %r12, %rdi
        dec %rsi
        jnz 1b
        pop %r15
        pop %r13
        pop %r12
        pop %rbp
        pop %rbx
        ret

/* FWORD "w": one 8-byte fill_words slot (w: 1 to 7 letters). */
.macro FWORD w:req
8881:   .ascii "\w"
8882:   .fill 7 - (8882b - 8881b), 1, ' '
        .byte 8882b - 8881b + 1
.endm

        .section .rodata
        .p2align 3
/* The 32 words of fill.text, in choice order (vmm_guest::FILL_WORDS). */
fill_words:
        FWORD "the"
        FWORD "and"
        FWORD "that"
        FWORD "with"
        FWORD "this"
        FWORD "from"
        FWORD "which"
        FWORD "have"
        FWORD "there"
        FWORD "would"
        FWORD "their"
        FWORD "about"
        FWORD "memory"
        FWORD "page"
        FWORD "guest"
        FWORD "host"
        FWORD "virtual"
        FWORD "machine"
        FWORD "migrate"
        FWORD "network"
        FWORD "kernel"
        FWORD "device"
        FWORD "driver"
        FWORD "system"
        FWORD "process"
        FWORD "state"
        FWORD "copy"
        FWORD "dirty"
        FWORD "source"
        FWORD "target"
        FWORD "stream"
        FWORD "bitmap"
fill_words_end:
        .if fill_words_end - fill_words != 32 * 8
        .error "fill_words must have 32 slots"
        .endif
        .text

/* ------------------------------------------------------------------------
 * disk: virtio-blk driver (virtio-mmio version 2 register layout), polled,
 * one request in flight, queue 0, descriptors 0 -> 1 -> 2.
 */
        .set VIRTIO_F_VERSION_1, 32
        .set VIRTIO_F_RING_RESET, 40
        .set VIRTIO_BLK_F_FLUSH, 9
        .set T_IN, 0
        .set T_OUT, 1
        .set T_FLUSH, 4
        .set T_GET_ID, 8
        .set ID_LEN, 20                 /* VIRTIO_BLK_ID_BYTES */
        .set QMAX, 8                    /* queue size used (if the device allows) */
        .set BAD_TIMEOUT_SHIFT, 32      /* malformed request: wait 2^32 TSC ticks */

        .globl workload_disk
workload_disk:
        /* pick the device: disk.dev=I, else the first virtio-blk */
        xor %ebx, %ebx
        cmpq $0, have_disk_dev
        je 1f
        mov disk_dev, %rbx
        cmp nvirtio, %rbx
        jae disk_nodev
        mov vaddr(,%rbx,8), %r12
        cmpl $VIRTIO_MAGIC, (%r12)
        jne disk_nodev
        cmpl $2, 8(%r12)
        jne disk_nodev
        jmp 2f
1:      cmp nvirtio, %rbx
        jae disk_nodev
        mov vaddr(,%rbx,8), %r12
        cmpl $VIRTIO_MAGIC, (%r12)
        jne 3f
        cmpl $2, 8(%r12)
        je 2f
3:      inc %rbx
        jmp 1b
2:      mov %r12, blk_base
        mov $vq_page, %edi              /* zero the rings (before any queue */
        mov $4096, %ecx                 /* address reaches the device) */
        xor %eax, %eax
        rep stosb
        movl 4(%r12), %eax
        mov %rax, blk_version
        cmp $1, %eax
        je disk_legacy
        cmp $2, %eax
        je 4f
        PUTS "disk: error=unsupported-version\n"
        jmp do_after
4:      /* status: reset, ACKNOWLEDGE, DRIVER */
        movl $0, 0x70(%r12)
        movl $1, 0x70(%r12)
        movl $3, 0x70(%r12)
        movl $1, 0x14(%r12)             /* offered features, both halves */
        movl 0x10(%r12), %r13d
        shl $32, %r13
        movl $0, 0x14(%r12)
        movl 0x10(%r12), %eax
        or %rax, %r13
        bt $VIRTIO_F_VERSION_1, %r13
        jc 5f
        PUTS "disk: error=no-version-1\n"
        jmp do_after
5:      mov $((1 << VIRTIO_F_VERSION_1) | (1 << VIRTIO_F_RING_RESET) | (1 << VIRTIO_BLK_F_FLUSH)), %rax
        and %rax, %r13                  /* accepted features */
        mov %r13, blk_features
        movl $0, 0x24(%r12)             /* DriverFeaturesSel = 0 */
        movl %r13d, 0x20(%r12)
        movl $1, 0x24(%r12)
        mov %r13, %rax
        shr $32, %rax
        movl %eax, 0x20(%r12)
        movl $0xb, 0x70(%r12)           /* | FEATURES_OK */
        testl $8, 0x70(%r12)
        jnz 6f
        PUTS "disk: error=features-rejected\n"
        jmp do_after
6:      call read_capacity
        movl $0, 0x30(%r12)             /* QueueSel = 0 */
        movl 0x34(%r12), %eax           /* QueueNumMax */
        cmp $4, %eax
        jae 7f
        PUTS "disk: error=queue-too-small\n"
        jmp do_after
7:      mov $QMAX, %ecx
        cmp %ecx, %eax
        cmova %ecx, %eax
        mov %rax, blk_qsize
        movl %eax, 0x38(%r12)           /* QueueNum */
        movl $vq_desc, 0x80(%r12)       /* QueueDescLow/High */
        movl $0, 0x84(%r12)
        movl $vq_avail, 0x90(%r12)      /* QueueDriverLow/High */
        movl $0, 0x94(%r12)
        movl $vq_used, 0xa0(%r12)       /* QueueDeviceLow/High */
        movl $0, 0xa4(%r12)
        movl $1, 0x44(%r12)             /* QueueReady */
        movl $0xf, 0x70(%r12)           /* | DRIVER_OK */
        jmp disk_ready

/* Legacy (version 1) transport: 32 feature bits, no FEATURES_OK, the queue
 * given as one page frame with the legacy vring layout: descriptors, then
 * the avail ring right after them, then the used ring at the next
 * QueueAlign boundary. With 16 entries and QueueAlign 0x100 this is exactly
 * the fixed layout used for version 2: desc @0, avail @0x100, used @0x200. */
disk_legacy:
        movl $0, 0x70(%r12)             /* reset, ACKNOWLEDGE, DRIVER */
        movl $1, 0x70(%r12)
        movl $3, 0x70(%r12)
        movl $0, 0x14(%r12)             /* HostFeaturesSel = 0 */
        movl 0x10(%r12), %r13d
        and $(1 << VIRTIO_BLK_F_FLUSH), %r13d
        mov %r13, blk_features
        movl $0, 0x24(%r12)             /* GuestFeaturesSel = 0 */
        movl %r13d, 0x20(%r12)          /* GuestFeatures */
        movl $4096, 0x28(%r12)          /* GuestPageSize */
        call read_capacity
        movl $0, 0x30(%r12)             /* QueueSel = 0 */
        cmpl $16, 0x34(%r12)            /* QueueNumMax */
        jae 1f
        PUTS "disk: error=queue-too-small\n"
        jmp do_after
1:      movq $16, blk_qsize
        movl $16, 0x38(%r12)            /* QueueNum */
        movl $0x100, 0x3c(%r12)         /* QueueAlign */
        mov $vq_page, %eax
        shr $12, %eax
        movl %eax, 0x40(%r12)           /* QueuePFN: activates the queue */
        movl $7, 0x70(%r12)             /* | DRIVER_OK */

disk_ready:
        PDEC "disk: index=", %rbx
        PHEX " features=", blk_features
        PDEC " capacity=", blk_capacity
        PDEC " queue_size=", blk_qsize
        PDEC " version=", blk_version
        call newline
        cmpq $0, blk_capacity
        jne 8f
        PUTS "disk: error=zero-capacity\n"
        jmp do_after
8:      cmpq $0, disk_bad
        jne disk_bad_request
        mov disk_count, %rax
        test %rax, %rax
        je disk_forever
        cmp blk_capacity, %rax          /* finite: at most one pass over the disk */
        jbe 9f
        mov blk_capacity, %rax
        mov %rax, disk_count
9:

/* Finite run: write disk.count sectors (sector = (disk.start + seq) mod
 * capacity for seq = 0..count-1), flush, read all back, compare, hash. */
        xor %r15d, %r15d                /* seq */
1:      cmp disk_count, %r15
        jae 2f
        mov %r15, %rdi
        call seq_sector
        mov %rax, %r14
        mov $wbuf, %edi
        mov %r15, %rsi
        mov %r14, %rdx
        call fill_sector
        mov $T_OUT, %edi
        mov %r14, %rsi
        mov $wbuf, %edx
        mov $512, %ecx
        call blk_build
        xor %edi, %edi
        call blk_submit
        test %eax, %eax
        jnz disk_io_error
        inc %r15
        jmp 1b
2:      call do_flush                   /* rax: 0 ok, 1 unsupported, 2 error */
        mov %rax, flush_result
        mov $0xcbf29ce484222325, %rbp   /* FNV-1a 64 offset basis */
        xor %r13d, %r13d                /* mismatches */
        xor %r15d, %r15d
3:      cmp disk_count, %r15
        jae 5f
        mov %r15, %rdi
        call seq_sector
        mov %rax, %r14
        mov $T_IN, %edi
        mov %r14, %rsi
        mov $rbuf, %edx
        mov $512, %ecx
        call blk_build
        xor %edi, %edi
        call blk_submit
        test %eax, %eax
        jnz disk_io_error
        mov $rbuf, %edi
        mov %rbp, %rsi
        call fnv_sector
        mov %rax, %rbp
        mov $wbuf, %edi
        mov %r15, %rsi
        mov %r14, %rdx
        call fill_sector
        mov $wbuf, %esi
        mov $rbuf, %edi
        mov $512, %ecx
        repe cmpsb
        je 4f
        inc %r13
4:      inc %r15
        jmp 3b
5:      PDEC "disk: sectors=", disk_count
        PHEX " checksum=", %rbp
        test %r13, %r13
        jnz 6f
        PUTS " verify=ok"
        jmp 7f
6:      PUTS " verify=fail"
7:      PDEC " mismatches=", %r13
        mov flush_result, %rax
        STRADDR %edi, " flush=ok\n"
        test %rax, %rax
        jz 8f
        STRADDR %edi, " flush=unsupported\n"
        cmp $1, %rax
        je 8f
        STRADDR %edi, " flush=error\n"
8:      call puts
        jmp do_after

/* Forever (disk.count=0): write sector, read it back and compare, flush
 * every 64 sectors; progress `disk: seq=N` (N = sectors completed) after
 * the first sector and then every >= 2^30 TSC ticks. */
disk_forever:
        xor %r15d, %r15d
        call tsc
        mov %rax, %rbp
1:      mov %r15, %rdi
        call seq_sector
        mov %rax, %r14
        mov $wbuf, %edi
        mov %r15, %rsi
        mov %r14, %rdx
        call fill_sector
        mov $T_OUT, %edi
        mov %r14, %rsi
        mov $wbuf, %edx
        mov $512, %ecx
        call blk_build
        xor %edi, %edi
        call blk_submit
        test %eax, %eax
        jnz disk_io_error
        mov $T_IN, %edi
        mov %r14, %rsi
        mov $rbuf, %edx
        mov $512, %ecx
        call blk_build
        xor %edi, %edi
        call blk_submit
        test %eax, %eax
        jnz disk_io_error
        mov $wbuf, %esi
        mov $rbuf, %edi
        mov $512, %ecx
        repe cmpsb
        jne 4f
        mov %r15, %rax
        and $63, %eax
        cmp $63, %eax
        jne 2f
        call do_flush
        cmp $2, %rax
        je disk_io_error
2:      inc %r15
        cmp $1, %r15
        je 3f
        call tsc
        sub %rbp, %rax
        shr $PROGRESS_SHIFT, %rax
        jz 1b
3:      PDEC "disk: seq=", %r15
        call newline
        call tsc
        mov %rax, %rbp
        jmp 1b
4:      PDEC "disk: error=verify seq=", %r15
        PDEC " sector=", %r14
        call newline
        jmp halt_forever

disk_nodev:
        PUTS "disk: error=no-device\n"
        jmp do_after

/* disk_io_error: status in eax (0xff = never written by the device). */
disk_io_error:
        mov %eax, %eax
        PDEC "disk: error=io status=", %rax
        PDEC " seq=", %r15
        PDEC " sector=", %r14
        call newline
        jmp do_after

/* Malformed request (disk.bad=K), a read (IN) of sector 0 with 3
 * descriptors, one of them broken:
 *   K=1 short-header: the header descriptor is 8 bytes instead of 16;
 *   K=2 outside-ram:  the data descriptor points at 0x4000_0000_0000 (64 TiB);
 *   K=3 no-status:    the chain has no writable status descriptor (header +
 *                     read-only data only);
 * prints `disk: bad-request kind=NAME status=N device_status=0x..` with N the
 * status byte written by the device in decimal, or `none` if the request was
 * not completed within 2^32 TSC ticks (e.g. QEMU marks the device broken and
 * never completes it). For K=3 the status byte cannot be written, so N is
 * `none` or, if the device completed the request, `completed`. */
disk_bad_request:
        mov $T_IN, %edi
        xor %esi, %esi
        mov $rbuf, %edx
        mov $512, %ecx
        call blk_build
        mov disk_bad, %rax
        cmp $1, %rax
        jne 1f
        movl $8, vq_desc + 8            /* desc[0].len = 8 */
        STRADDR %ebx, "short-header"
        jmp 4f
1:      cmp $2, %rax
        jne 2f
        mov $0x400000000000, %rax
        mov %rax, vq_desc + 16          /* desc[1].addr */
        STRADDR %ebx, "outside-ram"
        jmp 4f
2:      movw $0, vq_desc + 16 + 12      /* desc[1].flags: read-only, no NEXT */
        STRADDR %ebx, "no-status"
4:      mov $1, %edi
        call blk_submit
        mov %rax, %r13
        PUTS "disk: bad-request kind="
        mov %rbx, %rdi
        call puts
        cmp $-1, %r13
        jne 5f
        PUTS " status=none"
        jmp 7f
5:      cmpq $3, disk_bad
        jne 6f
        PUTS " status=completed"
        jmp 7f
6:      PDEC " status=", %r13
7:      mov blk_base, %rax
        movl 0x70(%rax), %eax
        PHEX " device_status=", %rax
        call newline
        jmp do_after

/* blk_get_id(rdi = index, rsi = base of a modern virtio-blk transport with
 * ACKNOWLEDGE | DRIVER set): negotiates VERSION_1 only, sets up queue 0,
 * asks for the serial number (VIRTIO_BLK_T_GET_ID) and prints
 * `virtio-blk-id: index=I serial=S` (S: the bytes up to the first NUL, at
 * most 20; `(none)` if empty) or `virtio-blk-id: index=I error=...`. The
 * caller resets the device. */
        .globl blk_get_id
blk_get_id:
        push %rbx
        push %r12
        mov %rdi, %rbx
        mov %rsi, %r12
        mov %rsi, blk_base
        mov $vq_page, %edi              /* fresh rings */
        mov $4096, %ecx
        xor %eax, %eax
        rep stosb
        mov $rbuf, %edi                 /* the id buffer reads as empty */
        mov $32, %ecx
        rep stosb
        movl $0, 0x24(%r12)             /* DriverFeaturesSel = 0 */
        movl $0, 0x20(%r12)
        movl $1, 0x24(%r12)
        movl $1, 0x20(%r12)             /* VERSION_1 (bit 32) */
        movl $0xb, 0x70(%r12)           /* | FEATURES_OK */
        testl $8, 0x70(%r12)
        jnz 1f
        PDEC "virtio-blk-id: index=", %rbx
        PUTS " error=features-rejected\n"
        jmp 9f
1:      movl $0, 0x30(%r12)             /* QueueSel = 0 */
        movl 0x34(%r12), %eax           /* QueueNumMax */
        cmp $4, %eax
        jae 2f
        PDEC "virtio-blk-id: index=", %rbx
        PUTS " error=queue-too-small\n"
        jmp 9f
2:      mov $QMAX, %ecx
        cmp %ecx, %eax
        cmova %ecx, %eax
        mov %rax, blk_qsize
        movl %eax, 0x38(%r12)           /* QueueNum */
        movl $vq_desc, 0x80(%r12)
        movl $0, 0x84(%r12)
        movl $vq_avail, 0x90(%r12)
        movl $0, 0x94(%r12)
        movl $vq_used, 0xa0(%r12)
        movl $0, 0xa4(%r12)
        movl $1, 0x44(%r12)             /* QueueReady */
        movl $0xf, 0x70(%r12)           /* | DRIVER_OK */
        mov $T_GET_ID, %edi
        xor %esi, %esi
        mov $rbuf, %edx
        mov $ID_LEN, %ecx
        call blk_build
        mov $1, %edi                    /* bounded wait */
        call blk_submit
        mov %rax, %r12                  /* status (the base is done with) */
        PDEC "virtio-blk-id: index=", %rbx
        test %r12, %r12
        jz 3f
        PDEC " status=", %r12
        call newline
        jmp 9f
3:      PUTS " serial="
        cmpb $0, rbuf
        jne 4f
        PUTS "(none)"
4:      xor %ecx, %ecx
5:      cmp $ID_LEN, %ecx
        jae 6f
        movzbl rbuf(%rcx), %edi
        test %edi, %edi
        jz 6f
        call putc                       /* clobbers rax, rdx */
        inc %ecx
        jmp 5b
6:      call newline
9:      pop %r12
        pop %rbx
        ret

/* read_capacity(): blk_capacity = config capacity (two 32-bit reads). */
read_capacity:
        mov blk_base, %rdx
        movl 0x104(%rdx), %eax
        shl $32, %rax
        movl 0x100(%rdx), %ecx
        or %rcx, %rax
        mov %rax, blk_capacity
        ret

/* seq_sector(rdi = seq) -> rax = (disk.start + seq) mod capacity. */
seq_sector:
        mov disk_start, %rax
        add %rdi, %rax
        xor %edx, %edx
        divq blk_capacity
        mov %rdx, %rax
        ret

/* do_flush() -> rax: 0 ok, 1 unsupported (VIRTIO_BLK_F_FLUSH not
 * negotiated), 2 error. */
do_flush:
        btq $VIRTIO_BLK_F_FLUSH, blk_features
        jc 1f
        mov $1, %eax
        ret
1:      mov $T_FLUSH, %edi
        xor %esi, %esi
        xor %edx, %edx
        xor %ecx, %ecx
        call blk_build
        xor %edi, %edi
        call blk_submit
        test %eax, %eax
        jz 2f
        mov $2, %eax
2:      ret

/* blk_build(edi = type, rsi = sector, rdx = buffer, ecx = length): writes the
 * request header and descriptors 0 (header, 16 B, read-only) -> 1 (data;
 * device-writable for IN) -> 2 (status, 1 B, device-writable); with length 0
 * the chain is 0 -> 2. Sets the status byte to 0xff. */
blk_build:
        mov %edi, req_hdr               /* type */
        movl $0, req_hdr + 4            /* reserved */
        mov %rsi, req_hdr + 8           /* sector */
        movb $0xff, req_status
        movq $req_hdr, vq_desc          /* desc[0] */
        movl $16, vq_desc + 8
        movw $1, vq_desc + 12           /* NEXT */
        movw $1, vq_desc + 14
        test %ecx, %ecx
        jnz 1f
        movw $2, vq_desc + 14           /* no data: header -> status */
        jmp 2f
1:      mov %rdx, vq_desc + 16          /* desc[1] */
        mov %ecx, vq_desc + 16 + 8
        mov $1, %eax                    /* NEXT */
        cmp $T_OUT, %edi
        je 3f
        or $2, %eax                     /* WRITE (device writes: IN, GET_ID) */
3:      movw %ax, vq_desc + 16 + 12
        movw $2, vq_desc + 16 + 14
2:      movq $req_status, vq_desc + 32  /* desc[2] */
        movl $1, vq_desc + 32 + 8
        movw $2, vq_desc + 32 + 12      /* WRITE */
        movw $0, vq_desc + 32 + 14
        ret

/* blk_submit(edi = 1: with timeout, 0: wait forever) -> rax = status byte,
 * or -1 on timeout. Publishes head 0 in the avail ring, notifies queue 0,
 * polls the used ring index. x86 keeps stores in order, so the ring entry
 * is visible before the index and both before the notify. */
blk_submit:
        push %rbx
        push %r12
        mov %edi, %r12d
        call tsc
        mov %rax, %rbx                  /* start time */
        movzwl vq_avail + 2, %eax       /* avail idx */
        mov blk_qsize, %rcx
        dec %ecx
        and %eax, %ecx
        movw $0, vq_avail + 4(,%rcx,2)  /* ring[idx % size] = head 0 */
        inc %eax
        movw %ax, vq_avail + 2
        mov blk_base, %rcx
        movl $0, 0x50(%rcx)             /* QueueNotify = 0 */
1:      cmpw %ax, vq_used + 2
        je 3f
        pause
        test %r12d, %r12d
        jz 1b
        push %rax
        call tsc
        sub %rbx, %rax
        shr $BAD_TIMEOUT_SHIFT, %rax
        pop %rax
        jz 1b
        mov $-1, %rax
        jmp 4f
3:      movzbl req_status, %eax
4:      pop %r12
        pop %rbx
        ret

/* fill_sector(rdi = buffer, rsi = seq, rdx = sector): the 512-byte pattern:
 * "vmmguest seq=<seq> sector=<sector>\n" (decimal), then byte i (for every
 * offset i after the header, up to 511) = (sector + seq + i) mod 256. */
fill_sector:
        push %rbx
        push %r12
        push %r13
        mov %rdi, %rbx
        mov %rsi, %r12
        mov %rdx, %r13
        STRADDR %esi, "vmmguest seq="
        call copy_str
        mov %rax, %rdi
        mov %r12, %rsi
        call fmt_dec
        mov %rax, %rdi
        STRADDR %esi, " sector="
        call copy_str
        mov %rax, %rdi
        mov %r13, %rsi
        call fmt_dec
        movb $10, (%rax)
        inc %rax
        mov %rax, %rcx
        sub %rbx, %rcx                  /* i */
        lea (%r12,%r13), %rdx           /* sector + seq */
1:      cmp $512, %rcx
        jae 2f
        lea (%rdx,%rcx), %rax
        mov %al, (%rbx,%rcx)
        inc %rcx
        jmp 1b
2:      pop %r13
        pop %r12
        pop %rbx
        ret

/* copy_str(rdi = dst, rsi = NUL-terminated src) -> rax = dst end. */
copy_str:
1:      movzbl (%rsi), %eax
        test %al, %al
        jz 2f
        mov %al, (%rdi)
        inc %rsi
        inc %rdi
        jmp 1b
2:      mov %rdi, %rax
        ret

/* fnv_sector(rdi = 512-byte buffer, rsi = hash) -> rax: FNV-1a 64 update. */
fnv_sector:
        mov %rsi, %rax
        mov $0x100000001b3, %rdx
        mov $512, %ecx
1:      movzbl (%rdi), %esi
        xor %rsi, %rax
        imul %rdx, %rax
        inc %rdi
        dec %ecx
        jnz 1b
        ret

        .section .rodata
        .globl cpu_vendor_regs
cpu_vendor_regs: .byte 4, 12, 8         /* vendor string: EBX, EDX, ECX of leaf 0 */

        /* In .data, not .bss: CPL 0 fills it before CPL 3 clears the bss. */
        .data
        .p2align 4
        .globl cpuid_cpl0
cpuid_cpl0:     .space 6 * 16           /* leaves 0, 1, 7, 0x80000000, 0x80000001, 0xd */

        .bss
        .p2align 12
vq_page:
vq_desc:        .space 0x100            /* 16 descriptors (legacy: 16, v2: QMAX = 8) */
vq_avail:       .space 0x100
vq_used:        .space 0x100
req_hdr:        .space 16
req_status:     .space 16
        .space 4096 - 0x320
        .p2align 12
wbuf:           .space 4096
rbuf:           .space 4096
        .p2align 3
blk_base:       .quad 0
blk_features:   .quad 0
blk_capacity:   .quad 0
blk_qsize:      .quad 0
blk_version:    .quad 0
flush_result:   .quad 0
