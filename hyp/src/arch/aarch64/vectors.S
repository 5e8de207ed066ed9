// EL2 exception vectors: all 16 entries save a TrapFrame on the EL2 stack
// and call hyp_trap(kind, frame); returning restores the frame and erets.
// The frame may have been switched to another context (host <-> guest) by
// the handler: it is what gets restored.

.equ FRAME_SIZE, 272

.macro vector kind
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       __hyp_trap_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global __hyp_vectors
__hyp_vectors:
    vector 0    // current EL, SP_EL0: sync
    vector 1    //   irq
    vector 2    //   fiq
    vector 3    //   serror
    vector 4    // current EL, SP_ELx: sync
    vector 5
    vector 6
    vector 7
    vector 8    // lower EL, AArch64: sync
    vector 9    //   irq
    vector 10   //   fiq
    vector 11   //   serror
    vector 12   // lower EL, AArch32
    vector 13
    vector 14
    vector 15

__hyp_trap_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el2
    stp     x30, x2, [sp, #240]
    mrs     x3, spsr_el2
    str     x3, [sp, #256]
    mov     x1, sp
    bl      hyp_trap

.global __hyp_eret_frame
// sp = frame to restore.
__hyp_eret_frame:
    ldr     x3, [sp, #256]
    ldp     x30, x2, [sp, #240]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME_SIZE
    eret

// __hyp_enter_lower(frame, stack_top): first entry into a lower EL. Copies
// the frame (static per-CPU storage) to the top of this CPU's stack, where
// every later trap builds its frame, and erets with it.
.global __hyp_enter_lower
__hyp_enter_lower:
    sub     sp, x1, #FRAME_SIZE
    mov     x2, sp
    mov     x3, #(FRAME_SIZE / 16)
1:  ldp     x4, x5, [x0], #16
    stp     x4, x5, [x2], #16
    subs    x3, x3, #1
    b.ne    1b
    b       __hyp_eret_frame
