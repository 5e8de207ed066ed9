/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * The ioctl ABI of the pkvm-rs host driver (/dev/pkvm), described in
 * docs/linux-host-abi.md. The exit reasons and the meaning of every value
 * passed to the hypervisor are the hyp's own (docs/abi.md).
 */
#ifndef _UAPI_PKVM_H
#define _UAPI_PKVM_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define PKVM_API_VERSION	2

#define PKVMIO	0xE8

/* On /dev/pkvm. */
#define PKVM_GET_API_VERSION	_IO(PKVMIO, 0x00)
#define PKVM_CREATE_VM		_IO(PKVMIO, 0x01)

/* The hyp's trace records (64 bytes each) of the calling CPU. */
struct pkvm_trace {
	__u64 buf;
	__u64 size;
	__u64 records;
	__u64 lost;
};

#define PKVM_TRACE_DRAIN	_IOWR(PKVMIO, 0x02, struct pkvm_trace)

/* On a VM fd. */
struct pkvm_memory {
	__u64 ipa;
	__u64 size;
	__u64 flags;
};

#define PKVM_VCPU_OFF		0x1

struct pkvm_vcpu_init {
	__u64 pc;
	__u64 x0;
	__u32 flags;
	__u32 index;
};

#define PKVM_PIN_EXCLUSIVE	0x1

struct pkvm_pin {
	__u64 ipa;
	__u32 flags;
	__u32 pad;
};

struct pkvm_page_state {
	__u64 ipa;
	__u32 state;
	__u32 pins;
};

struct pkvm_vm_stats {
	__u64 ipa;
	__u64 table_pages;
	__u64 level;
	__u64 state;
	__u64 shares;
	__u64 unshares;
	__u64 guards;
	__u64 granules;
};

#define PKVM_IRQ_CONFIGURE	0
#define PKVM_IRQ_LINE		1
#define PKVM_IRQ_PULSE		2
#define PKVM_IRQ_STATE		3
#define PKVM_IRQ_CLEAR		4

struct pkvm_irq {
	__u32 vcpu;
	__u32 intid;
	__u32 op;
	__u32 pad;
	__u64 arg[2];
	__u64 pending;
	__u64 active;
};

#define PKVM_CREATE_MEMORY	_IOW(PKVMIO, 0x10, struct pkvm_memory)
#define PKVM_CREATE_VCPU	_IOWR(PKVMIO, 0x11, struct pkvm_vcpu_init)
#define PKVM_PIN		_IOW(PKVMIO, 0x12, struct pkvm_pin)
#define PKVM_UNPIN		_IOW(PKVMIO, 0x13, struct pkvm_pin)
#define PKVM_PAGE_STATE		_IOWR(PKVMIO, 0x14, struct pkvm_page_state)
#define PKVM_VM_STATS		_IOWR(PKVMIO, 0x15, struct pkvm_vm_stats)
#define PKVM_IRQ		_IOWR(PKVMIO, 0x16, struct pkvm_irq)

/* On the memory fd (the guest's RAM as a file, offset 0 at its IPA). */
#define PKVM_MEM_PIN_EXCLUSIVE	0x1

struct pkvm_mem_pin {
	__u64 offset;
	__u32 flags;
	__u32 pad;
};

struct pkvm_mem_info {
	__u64 size;
	__u64 blocks;
	__u64 whole_blocks;
	__u64 split_blocks;
	__u64 mapped;
	__u64 pins;
	__u64 waiting;
	__u64 faults;
	__u64 refused;
	__u64 conversions;
	__u64 wait_ns;
};

#define PKVM_MEM_PIN		_IOW(PKVMIO, 0x30, struct pkvm_mem_pin)
#define PKVM_MEM_UNPIN		_IOW(PKVMIO, 0x31, struct pkvm_mem_pin)
#define PKVM_MEM_INFO		_IOR(PKVMIO, 0x32, struct pkvm_mem_info)

/* On a vCPU fd; the run structure is its mapping at offset 0. */
#define PKVM_EXIT_MMIO			1
#define PKVM_EXIT_HYPERCALL		2
#define PKVM_EXIT_SYSTEM_OFF		3
#define PKVM_EXIT_SYSTEM_RESET		4
#define PKVM_EXIT_GUEST_ABORT		5
#define PKVM_EXIT_UNSHARE_PENDING	6
#define PKVM_EXIT_GUEST_FATAL		9
#define PKVM_EXIT_WFI			10
#define PKVM_EXIT_CPU_ON		11
#define PKVM_EXIT_CPU_OFF		12
#define PKVM_EXIT_SGI			13
#define PKVM_EXIT_INTR			0x100

struct pkvm_run {
	__u64 exit_reason;
	__u64 exit[5];
	__u64 reply[4];
	__u64 irq_exits;
};

#define PKVM_RUN		_IO(PKVMIO, 0x20)

#endif /* _UAPI_PKVM_H */
