// EL2 exception vectors: every entry saves a TrapFrame on the EL2 stack
// and calls hyp_trap(kind, frame); returning restores the frame and erets.
// The frame may have been switched to another context (host <-> guest) by
// the handler: it is what gets restored.
//
// One exception: an HVC64 from the host (lower EL sync, ESR_EL2.EC = HVC64,
// VTTBR_EL2.VMID = 0, the host's VMID: every guest has a VMID of 1 or more)
// takes the short host-call entry. It saves only what the Rust ABI lets a
// callee clobber (x0-x18, x30) in the same frame slots, calls
// hyp_host_call(regs) and, if that handled the call, restores those and
// erets: ELR_EL2 and SPSR_EL2 are untouched by a host call (EL2 runs with
// every exception masked; one taken at EL2 is fatal). A call that needs the
// full frame (VCPU_RUN switches worlds) makes hyp_host_call return 0: the
// entry then completes the frame (x19-x29 still hold the host's values, the
// Rust ABI preserves them) and calls hyp_host_full_call(frame), straight to
// the host-call handler (no hyp_trap, no syndrome dispatch again).

.equ FRAME_SIZE, 272
.equ ESR_EC_SHIFT, 26
.equ EC_HVC64, 0x16
.equ VTTBR_VMID_SHIFT, 48
.equ KIND_SYNC_A64, 8

// The frame's register pairs: x2-x17 (caller-saved, with x0/x1 and x18,
// x30 what the short host-call entry saves) and x20-x29.
.macro frame_x2_x17 op
    \op    x2, x3, [sp, #16]
    \op    x4, x5, [sp, #32]
    \op    x6, x7, [sp, #48]
    \op    x8, x9, [sp, #64]
    \op    x10, x11, [sp, #80]
    \op    x12, x13, [sp, #96]
    \op    x14, x15, [sp, #112]
    \op    x16, x17, [sp, #128]
.endm

.macro frame_x20_x29 op
    \op    x20, x21, [sp, #160]
    \op    x22, x23, [sp, #176]
    \op    x24, x25, [sp, #192]
    \op    x26, x27, [sp, #208]
    \op    x28, x29, [sp, #224]
.endm

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
    // lower EL, AArch64: sync (a host HVC64 takes the short entry)
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mrs     x0, esr_el2
    ubfx    x0, x0, #ESR_EC_SHIFT, #6
    cmp     x0, #EC_HVC64
    b.ne    1f
    mrs     x0, vttbr_el2
    lsr     x0, x0, #VTTBR_VMID_SHIFT
    cbz     x0, __hyp_host_call
1:  mov     x0, #KIND_SYNC_A64
    b       __hyp_trap_common
    vector 9    //   irq
    vector 10   //   fiq
    vector 11   //   serror
    vector 12   // lower EL, AArch32
    vector 13
    vector 14
    vector 15

// The short host-call entry: x0, x1 are saved at [sp], sp = the frame.
__hyp_host_call:
    frame_x2_x17 stp
    str     x18, [sp, #144]
    str     x30, [sp, #240]
    mov     x0, sp
    bl      hyp_host_call
    cbz     x0, 2f
    ldr     x30, [sp, #240]
    ldr     x18, [sp, #144]
    frame_x2_x17 ldp
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME_SIZE
    eret
    // Needs the full frame (VCPU_RUN): x0-x18 and x30 are saved and
    // unchanged; complete it and call hyp_host_full_call(frame).
2:  str     x19, [sp, #152]
    frame_x20_x29 stp
    mrs     x2, elr_el2
    str     x2, [sp, #248]
    mrs     x3, spsr_el2
    str     x3, [sp, #256]
    mov     x0, sp
    bl      hyp_host_full_call
    b       __hyp_eret_frame

__hyp_trap_common:
    frame_x2_x17 stp
    stp     x18, x19, [sp, #144]
    frame_x20_x29 stp
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
    frame_x2_x17 ldp
    ldp     x18, x19, [sp, #144]
    frame_x20_x29 ldp
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME_SIZE
    eret

// __hyp_copy_frame(dst, src): copies one frame (FRAME_SIZE bytes, 16-byte
// aligned) with pairs of loads and stores; the world switch's frame moves
// (the compiler's memcpy takes ~200 instructions for the same).
.global __hyp_copy_frame
__hyp_copy_frame:
    .irp off, 0, 64, 128, 192
    ldp     x2, x3, [x1, #\off]
    ldp     x4, x5, [x1, #(\off + 16)]
    ldp     x6, x7, [x1, #(\off + 32)]
    ldp     x8, x9, [x1, #(\off + 48)]
    stp     x2, x3, [x0, #\off]
    stp     x4, x5, [x0, #(\off + 16)]
    stp     x6, x7, [x0, #(\off + 32)]
    stp     x8, x9, [x0, #(\off + 48)]
    .endr
    ldp     x2, x3, [x1, #256]
    stp     x2, x3, [x0, #256]
    ret

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
