// EL2 exception vectors. Two tables, one per kind of lower-EL context
// (VBAR_EL2 is switched with the world): `__hyp_vectors` while the host
// runs, `__hyp_guest_vectors` while a guest vCPU runs. They differ only in
// the lower-EL AArch64 sync entry; no entry needs to find out who ran.
//
// Every entry but the short ones below saves a TrapFrame on the EL2 stack
// and calls hyp_trap(kind, frame) (a guest's sync exception:
// hyp_guest_sync(frame)). Its return value says what to restore
// (`trap::Next`): 0 the frame that trapped; 1 the frame above it (a guest
// exits: the host's frame, kept at the top of the stack while the guest
// runs, see below); anything else is the address of a guest vCPU's frame
// (its context, off the stack) to enter, this frame staying where it is.
//
// The host always traps with an empty EL2 stack, so its frame is the top
// FRAME_SIZE bytes. VCPU_RUN enters the guest keeping it there: while a
// guest runs the host's general registers, PC and PSTATE stay in that
// frame (no copy), and the guest's traps build their frames below it.
//
// Short entries, in the lower-EL AArch64 sync slot: the host's HVC64 (the
// short host-call entry, hyp_host_call), the host's stage-2 data and
// instruction aborts (the short host-abort entry, hyp_host_abort) and a
// guest's HVC64 (the short guest-call entry, hyp_guest_call: the calls
// answered from x0-x3 and the memory calls). Each saves only what the
// Rust ABI lets a callee clobber (x0-x18, x30; x18 and x30 as a pair in
// the x18/x19 slots) and calls its handler with them: x19-x29 are
// preserved by the Rust code itself, and ELR_EL2 and SPSR_EL2 stay live in
// the CPU until the ERET (EL2 runs with every exception masked; one taken
// at EL2 is fatal), so a handler that injects an exception writes them
// directly. A handler returns 0, having done nothing, when the exception
// needs the full frame (VCPU_RUN switches worlds; a guest call that exits
// to the host; a host access to a page the hyp emulates, which reads or
// writes the register it names): the entry then completes the frame and
// calls the full handler (hyp_host_full_call, hyp_guest_sync, hyp_trap),
// whose return value is hyp_trap's.

.equ FRAME_SIZE, 272
.equ ESR_EC_SHIFT, 26
.equ EC_HVC64, 0x16
.equ EC_IABT_LOW, 0x20
.equ EC_DABT_LOW, 0x24
.equ KIND_SYNC_A64, 8

// The frame's register pairs: x2-x17 (caller-saved, with x0/x1 and x18,
// x30 what the short host-call entry saves) and x20-x29, from `base`.
.macro frame_x2_x17 op, base
    \op    x2, x3, [\base, #16]
    \op    x4, x5, [\base, #32]
    \op    x6, x7, [\base, #48]
    \op    x8, x9, [\base, #64]
    \op    x10, x11, [\base, #80]
    \op    x12, x13, [\base, #96]
    \op    x14, x15, [\base, #112]
    \op    x16, x17, [\base, #128]
.endm

.macro frame_x20_x29 op, base
    \op    x20, x21, [\base, #160]
    \op    x22, x23, [\base, #176]
    \op    x24, x25, [\base, #192]
    \op    x26, x27, [\base, #208]
    \op    x28, x29, [\base, #224]
.endm

// Loads every register from the frame at `base` (x0 last: `base` may be
// x0).
.macro load_frame base
    ldr     x3, [\base, #256]
    ldp     x30, x2, [\base, #240]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    frame_x2_x17 ldp, \base
    ldp     x18, x19, [\base, #144]
    frame_x20_x29 ldp, \base
    ldp     x0, x1, [\base, #0]
.endm

.macro vector kind
    .balign 0x80
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       __hyp_trap_common
.endm

// One table; the macro `lower_sync` is the lower-EL AArch64 sync entry,
// in its 32-instruction slot (.org fails the build if it overflows).
.macro vector_table name, lower_sync
.balign 0x800
.global \name
\name:
    vector 0    // current EL, SP_EL0: sync
    vector 1    //   irq
    vector 2    //   fiq
    vector 3    //   serror
    vector 4    // current EL, SP_ELx: sync
    vector 5
    vector 6
    vector 7
    .balign 0x80
    \lower_sync
    .org    \name + 0x480
    vector 9    //   irq
    vector 10   //   fiq
    vector 11   //   serror
    vector 12   // lower EL, AArch32
    vector 13
    vector 14
    vector 15
.endm

// The rest of a frame, once x0 and x1 are in it.
.macro save_frame
    frame_x2_x17 stp, sp
    stp     x18, x19, [sp, #144]
    frame_x20_x29 stp, sp
    mrs     x2, elr_el2
    stp     x30, x2, [sp, #240]
    mrs     x3, spsr_el2
    str     x3, [sp, #256]
.endm

// The short entries' halves: x2-x17 and x18/x30 (as a pair in the x18/x19
// slots) saved below x0/x1, and restored with x0/x1 before the ERET.
.macro short_save
    frame_x2_x17 stp, sp
    stp     x18, x30, [sp, #144]
.endm

.macro short_restore_eret
    ldp     x18, x30, [sp, #144]
    frame_x2_x17 ldp, sp
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME_SIZE
    eret
.endm

// A short entry's body once x0 and x1 are saved: saves x2-x18 and x30,
// calls `handler`(regs) and, if that returns non-zero, restores them and
// erets; 0 (nothing done, the exception needs the full frame) goes to
// `full`.
.macro short_body handler, full
    short_save
    mov     x0, sp
    bl      \handler
    cbz     x0, \full
    short_restore_eret
.endm

// A sync exception from a lower EL: an HVC64 takes the short call entry,
// anything else `other` (x0, x1 saved; x0 = ESR_EL2.EC).
.macro short_call_entry handler, other, full
    sub     sp, sp, #FRAME_SIZE
    stp     x0, x1, [sp, #0]
    mrs     x0, esr_el2
    ubfx    x0, x0, #ESR_EC_SHIFT, #6
    cmp     x0, #EC_HVC64
    b.ne    \other
    short_body \handler, \full
.endm

// After a short call entry left the call to the full frame: x0-x18 and
// x30 are saved and unchanged; x30 goes to its own slot, and the frame is
// completed.
.macro complete_frame
    ldr     x30, [sp, #152]
    str     x30, [sp, #240]
    str     x19, [sp, #152]
    frame_x20_x29 stp, sp
    mrs     x2, elr_el2
    str     x2, [sp, #248]
    mrs     x3, spsr_el2
    str     x3, [sp, #256]
.endm

// A guest's sync exception: an HVC64 answered from its arguments alone
// takes the short entry (hyp_guest_call); everything else the full frame,
// straight to hyp_guest_sync.
.macro guest_sync
    short_call_entry hyp_guest_call, __hyp_guest_trap, __hyp_guest_full_call
.endm

// The host's sync exception: an HVC64 takes the short host-call entry, a
// stage-2 abort the short host-abort entry (`__hyp_host_other`).
.macro host_sync
    short_call_entry hyp_host_call, __hyp_host_other, __hyp_host_full_call
.endm

.section .text.vectors, "ax"
vector_table __hyp_vectors, host_sync
vector_table __hyp_guest_vectors, guest_sync

// A host sync exception other than an HVC64 (x0 = EC; x0, x1 saved): a
// stage-2 data or instruction abort takes the short host-abort entry, built
// as the short host-call entry: hyp_host_abort(regs) resolves it (or injects
// the abort into the host, on ELR_EL2/SPSR_EL2 directly), or returns 0
// having done nothing (an access to a page the hyp emulates, which needs
// the register it names): then the frame is completed for hyp_trap.
__hyp_host_other:
    // EC_IABT_LOW (0x20) or EC_DABT_LOW (0x24): bit 2 apart.
    and     x1, x0, #~4
    cmp     x1, #EC_IABT_LOW
    b.ne    __hyp_host_trap
    short_body hyp_host_abort, __hyp_host_full_abort

__hyp_host_full_abort:
    complete_frame
    mov     x1, sp
    mov     x0, #KIND_SYNC_A64
    bl      hyp_trap
    b       __hyp_next

__hyp_host_trap:
    mov     x0, #KIND_SYNC_A64
    b       __hyp_trap_common

// A host call that needs the full frame (VCPU_RUN).
__hyp_host_full_call:
    complete_frame
    mov     x0, sp
    bl      hyp_host_full_call
    b       __hyp_next

__hyp_guest_trap:
    save_frame
    mov     x0, sp
    bl      hyp_guest_sync
    b       __hyp_next

// A guest call the short entry did not answer.
__hyp_guest_full_call:
    complete_frame
    mov     x0, sp
    bl      hyp_guest_sync
    b       __hyp_next

__hyp_trap_common:
    save_frame
    mov     x1, sp
    bl      hyp_trap

// x0 = what to restore (trap::Next, above).
__hyp_next:
    cbz     x0, __hyp_eret_frame
    cmp     x0, #1
    b.ne    1f
    add     sp, sp, #FRAME_SIZE
    b       __hyp_eret_frame
1:  load_frame x0
    eret

.global __hyp_eret_frame
// sp = frame to restore; it is popped.
__hyp_eret_frame:
    load_frame sp
    add     sp, sp, #FRAME_SIZE
    eret

// __hyp_copy_frame(dst, src): copies one frame (FRAME_SIZE bytes, 16-byte
// aligned) with pairs of loads and stores (a guest's registers into its
// context when it exits; the compiler's memcpy takes ~200 instructions).
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
