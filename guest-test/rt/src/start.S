// Entry of an EL1 payload: an arm64 Image header (so a boot loader may load
// it as a Linux Image), self-relocation when linked position-independent,
// stack, bss, FP on, vectors, then el1_main(x0 = DTB).
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
5:  mov     x1, #(3 << 20)          // CPACR_EL1.FPEN: no FP/SIMD traps
    msr     cpacr_el1, x1
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
