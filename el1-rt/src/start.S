// Entry of an EL1 payload: an arm64 Image header (so a boot loader may load
// it as a Linux Image), self-relocation when linked position-independent,
// stack, bss, entry-state snapshot, FP on, vectors, then el1_main(x0 = DTB).
.section .text.head, "ax"
.global _start
_start:
    b       1f                      // code0
    .long   0                       // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size
    .quad   0xa                     // flags: LE, 4K, anywhere
    .quad   0, 0, 0
    .ascii  "ARM\x64"
    .long   0
1:  msr     daifset, #0xf
    // Entry state, for isolation tests (el1_rt::sysregs::entry): x1..x30
    // folded into x20 (all zero unless someone left values behind), SP in x21.
    orr     x1, x1, x2
    orr     x1, x1, x3
    orr     x1, x1, x4
    orr     x1, x1, x5
    orr     x1, x1, x6
    orr     x1, x1, x7
    orr     x1, x1, x8
    orr     x1, x1, x9
    orr     x1, x1, x10
    orr     x1, x1, x11
    orr     x1, x1, x12
    orr     x1, x1, x13
    orr     x1, x1, x14
    orr     x1, x1, x15
    orr     x1, x1, x16
    orr     x1, x1, x17
    orr     x1, x1, x18
    orr     x1, x1, x19
    orr     x1, x1, x20
    orr     x1, x1, x21
    orr     x1, x1, x22
    orr     x1, x1, x23
    orr     x1, x1, x24
    orr     x1, x1, x25
    orr     x1, x1, x26
    orr     x1, x1, x27
    orr     x1, x1, x28
    orr     x1, x1, x29
    orr     x1, x1, x30
    mov     x20, x1
    mov     x21, sp
    mov     x19, x0
    // Load offset = runtime _start - link-time _start.
    adrp    x9, _start
    add     x9, x9, :lo12:_start
    ldr     x10, =__link_base
    sub     x9, x9, x10
    // Apply R_AARCH64_RELATIVE relocations.
    adrp    x11, __rela_start
    add     x11, x11, :lo12:__rela_start
    adrp    x12, __rela_end
    add     x12, x12, :lo12:__rela_end
2:  cmp     x11, x12
    b.hs    3f
    ldp     x13, x14, [x11], #16
    ldr     x15, [x11], #8
    cmp     w14, #1027
    b.ne    2b
    add     x15, x15, x9
    str     x15, [x13, x9]
    b       2b
3:  adrp    x1, __stack_top
    add     x1, x1, :lo12:__stack_top
    mov     sp, x1
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
4:  cmp     x1, x2
    b.hs    5f
    stp     xzr, xzr, [x1], #16
    b       4b
    // The rest of the entry state, before this code changes any of it
    // (layout: el1_rt::sysregs::EntryRegs).
5:  adrp    x1, EL1_RT_ENTRY
    add     x1, x1, :lo12:EL1_RT_ENTRY
    stp     x20, x21, [x1, #0]
    mrs     x2, sctlr_el1
    mrs     x3, ttbr0_el1
    stp     x2, x3, [x1, #16]
    mrs     x2, tcr_el1
    mrs     x3, mair_el1
    stp     x2, x3, [x1, #32]
    mrs     x2, vbar_el1
    mrs     x3, cpacr_el1
    stp     x2, x3, [x1, #48]
    mov     x2, #(3 << 20)          // CPACR_EL1.FPEN: no FP/SIMD traps
    msr     cpacr_el1, x2
    isb
    mrs     x2, fpcr
    mrs     x3, fpsr
    stp     x2, x3, [x1, #64]
    add     x1, x1, #80
    stp     q0, q1, [x1], #32
    stp     q2, q3, [x1], #32
    stp     q4, q5, [x1], #32
    stp     q6, q7, [x1], #32
    stp     q8, q9, [x1], #32
    stp     q10, q11, [x1], #32
    stp     q12, q13, [x1], #32
    stp     q14, q15, [x1], #32
    stp     q16, q17, [x1], #32
    stp     q18, q19, [x1], #32
    stp     q20, q21, [x1], #32
    stp     q22, q23, [x1], #32
    stp     q24, q25, [x1], #32
    stp     q26, q27, [x1], #32
    stp     q28, q29, [x1], #32
    stp     q30, q31, [x1], #32
    adrp    x1, __el1_vectors
    add     x1, x1, :lo12:__el1_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      el1_rt_start
6:  wfi
    b       6b
.ltorg

// Secondary CPUs (PSCI CPU_ON with this address): x0 = CPU index. The image
// is already relocated and its bss zeroed by the boot CPU.
.section .text, "ax"
.global _secondary_start
_secondary_start:
    msr     daifset, #0xf
    mov     x19, x0
    adrp    x1, SECONDARY_STACKS
    add     x1, x1, :lo12:SECONDARY_STACKS
    add     x2, x19, #1
    lsl     x2, x2, #14
    add     x1, x1, x2
    mov     sp, x1
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    adrp    x1, __el1_vectors
    add     x1, x1, :lo12:__el1_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x19
    bl      el1_rt_secondary
1:  wfi
    b       1b
