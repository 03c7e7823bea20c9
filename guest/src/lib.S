/* User-mode (CPL 3) helpers: serial output, number formatting, command-line
 * token parsing. Also callable from CPL 0 (the panic path): there the `out`
 * executes directly instead of trapping. See defs.inc for the convention. */
        .include "defs.inc"
        .text
        .code64

/* putc(dil): one byte to the 16550. At CPL 3 the `out` is allowed by the
 * TSS I/O bitmap (see entry.S); where a hypervisor ignores the bitmap it
 * raises #GP and the CPL 0 handler performs it (~48 us). The THR is written
 * without polling
 * LSR: reading LSR would cost another trap per byte, and both QEMU's and
 * our 16550 accept bytes immediately. Clobbers rax, rdx. */
        .globl putc
putc:
        mov %edi, %eax
        mov $COM1, %edx
        out %al, %dx
        ret

/* puts(rdi = NUL-terminated string). Clobbers rax, rdx, rsi. */
        .globl puts
puts:
        mov %rdi, %rsi
        mov $COM1, %edx
1:      movzbl (%rsi), %eax
        test %al, %al
        jz 2f
        out %al, %dx
        inc %rsi
        jmp 1b
2:      ret

/* fmt_hex(rdi = dst, rsi = value) -> rax = end: "0x" + minimal lowercase hex
 * digits (at least one), not NUL-terminated. Clobbers rcx, rdx, r8. */
        .globl fmt_hex
fmt_hex:
        movw $0x7830, (%rdi)            /* "0x" */
        add $2, %rdi
        mov %rsi, %rax                  /* count digits */
        xor %ecx, %ecx
1:      inc %ecx
        shr $4, %rax
        jnz 1b
        lea (%rdi,%rcx), %rax           /* end */
        mov %rax, %r8
2:      dec %r8
        mov %esi, %edx
        and $15, %edx
        movzbl hexdigits(%rdx), %edx
        mov %dl, (%r8)
        shr $4, %rsi
        cmp %rdi, %r8
        jne 2b
        ret

/* fmt_dec(rdi = dst, rsi = value) -> rax = end: unsigned decimal, not
 * NUL-terminated. Clobbers rcx, rdx, r8, r9. */
        .globl fmt_dec
fmt_dec:
        mov %rsi, %rax                  /* count digits */
        mov $10, %r9d
        xor %ecx, %ecx
1:      inc %ecx
        xor %edx, %edx
        div %r9
        test %rax, %rax
        jnz 1b
        lea (%rdi,%rcx), %r8            /* end */
        push %r8
        mov %rsi, %rax
2:      xor %edx, %edx
        div %r9
        add $'0', %dl
        dec %r8
        mov %dl, (%r8)
        test %rax, %rax
        jnz 2b
        pop %rax
        ret

/* put_hex(rdi = value), put_dec(rdi = value). Clobber caller-saved regs. */
        .globl put_hex
put_hex:
        mov %rdi, %rsi
        sub $40, %rsp
        mov %rsp, %rdi
        call fmt_hex
        movb $0, (%rax)
        mov %rsp, %rdi
        call puts
        add $40, %rsp
        ret

        .globl put_dec
put_dec:
        mov %rdi, %rsi
        sub $40, %rsp
        mov %rsp, %rdi
        call fmt_dec
        movb $0, (%rax)
        mov %rsp, %rdi
        call puts
        add $40, %rsp
        ret

/* kv_hex(rdi = key string, rsi = value): prints key then 0x<hex>.
 * kv_dec likewise in decimal. */
        .globl kv_hex
kv_hex:
        push %rsi
        call puts
        pop %rdi
        jmp put_hex

        .globl kv_dec
kv_dec:
        push %rsi
        call puts
        pop %rdi
        jmp put_dec

/* newline(): prints "\n". */
        .globl newline
newline:
        mov $10, %edi
        jmp putc

/* prefix(rsi = cursor, rdi = NUL-terminated prefix) -> rax = 1 and rsi
 * advanced past the prefix if the text at rsi starts with it, else rax = 0
 * and rsi unchanged. Clobbers rcx, rdx. */
        .globl prefix
prefix:
        mov %rsi, %rcx
1:      movzbl (%rdi), %edx
        test %dl, %dl
        jz 2f
        cmp (%rcx), %dl
        jne 3f
        inc %rdi
        inc %rcx
        jmp 1b
2:      mov %rcx, %rsi
        mov $1, %eax
        ret
3:      xor %eax, %eax
        ret

/* word(rsi = cursor, rdi = word) -> rax = 1 and rsi advanced if the token at
 * rsi is exactly `word` (followed by a space, tab, newline or NUL). */
        .globl word
word:
        push %rsi
        call prefix
        test %eax, %eax
        jz 1f
        movzbl (%rsi), %ecx
        call is_sep
        test %eax, %eax
        jz 1f
        add $8, %rsp
        mov $1, %eax
        ret
1:      pop %rsi
        xor %eax, %eax
        ret

/* is_sep(cl) -> rax = 1 if cl is NUL, space, tab, CR or LF. */
        .globl is_sep
is_sep:
        mov $1, %eax
        test %cl, %cl
        jz 1f
        cmp $' ', %cl
        je 1f
        cmp $9, %cl
        je 1f
        cmp $10, %cl
        je 1f
        cmp $13, %cl
        je 1f
        xor %eax, %eax
1:      ret

/* parse_num(rsi = cursor) -> rax = value, rsi advanced, rcx = number of
 * digits consumed (0: no number). Accepts decimal or 0x-prefixed hex,
 * followed by an optional K/M/G suffix (x 2^10/2^20/2^30, Linux memparse
 * style). Clobbers rdx. */
        .globl parse_num
parse_num:
        xor %eax, %eax
        xor %ecx, %ecx
        cmpb $'0', (%rsi)
        jne 5f
        movzbl 1(%rsi), %edx
        or $0x20, %dl
        cmp $'x', %dl
        jne 5f
        add $2, %rsi                    /* hex */
1:      movzbl (%rsi), %edx
        sub $'0', %edx
        cmp $9, %edx
        jbe 2f
        movzbl (%rsi), %edx
        or $0x20, %edx
        sub $'a', %edx
        cmp $5, %edx
        ja 8f
        add $10, %edx
2:      shl $4, %rax
        add %rdx, %rax
        inc %rsi
        inc %ecx
        jmp 1b
5:      movzbl (%rsi), %edx             /* decimal */
        sub $'0', %edx
        cmp $9, %edx
        ja 8f
        imul $10, %rax, %rax
        add %rdx, %rax
        inc %rsi
        inc %ecx
        jmp 5b
8:      movzbl (%rsi), %edx             /* suffix */
        or $0x20, %edx
        cmp $'k', %dl
        jne 1f
        shl $10, %rax
        inc %rsi
        ret
1:      cmp $'m', %dl
        jne 2f
        shl $20, %rax
        inc %rsi
        ret
2:      cmp $'g', %dl
        jne 3f
        shl $30, %rax
        inc %rsi
3:      ret

/* skip_token(rsi) -> rsi at the next separator (or NUL). */
        .globl skip_token
skip_token:
1:      movzbl (%rsi), %ecx
        call is_sep
        test %eax, %eax
        jnz 2f
        inc %rsi
        jmp 1b
2:      ret

/* tsc() -> rax = 64-bit time-stamp counter (rdtsc is allowed at CPL 3:
 * CR4.TSD is clear). Clobbers rdx. */
        .globl tsc
tsc:
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        ret

        .section .rodata
hexdigits:
        .ascii "0123456789abcdef"
