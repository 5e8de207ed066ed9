// Entry at EL2, as QEMU (or a boot loader) starts an arm64 Image:
// x0 = DTB, MMU off. Secondary CPUs come later (PSCI CPU_ON).
.section .text.head, "ax"
.global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size (bss and stacks included)
    .quad   0xa                     // flags: LE, 4K pages, place anywhere
    .quad   0, 0, 0                 // res2-res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

primary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    // Let EL2 use FP/SIMD (CPTR_EL2: TFP = 0, TZ = 0, TSM = 0, RES1 bits).
    mov     x1, #0x22ff
    msr     cptr_el2, x1
    isb
    // CPU 0 stack: top of the first 64 KiB slot.
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x1, x1, #0x10000
    mov     sp, x1
    // Zero .bss.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  adrp    x1, __hyp_vectors
    add     x1, x1, :lo12:__hyp_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    adrp    x1, _start
    add     x1, x1, :lo12:_start
    bl      hyp_main
3:  wfi
    b       3b

// Secondary CPUs, started by PSCI CPU_ON on the host's behalf: x0 = CPU
// index (the context the hyp passed). MMU off, EL2.
.global secondary_entry
secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    mov     x1, #0x22ff
    msr     cptr_el2, x1
    isb
    // Stack: slot x19 of __stacks.
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x19, #1
    lsl     x2, x2, #16
    add     x1, x1, x2
    mov     sp, x1
    adrp    x1, __hyp_vectors
    add     x1, x1, :lo12:__hyp_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    bl      hyp_secondary_main
1:  wfi
    b       1b
