/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pkvm-rs host driver: the objects behind its file descriptors and the
 * hypervisor calls (docs/abi.md, "Host -> hyp").
 */
#ifndef _PKVM_HOST_H
#define _PKVM_HOST_H

#include <linux/arm-smccc.h>
#include <linux/fs.h>
#include <linux/kref.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/xarray.h>

#include "pkvm.h"

/* Host calls (docs/abi.md). */
#define HC_VM_CREATE	0xc6000100
#define HC_VM_DESTROY	0xc6000101
#define HC_VCPU_CREATE	0xc6000102
#define HC_VCPU_RUN	0xc6000103
#define HC_DONATE_GUEST	0xc6000104
#define HC_SHARE_HYP	0xc6000105
#define HC_UNSHARE_HYP	0xc6000106
#define HC_PIN		0xc6000107
#define HC_UNPIN	0xc6000108
#define HC_PAGE_STATE	0xc600010b
#define HC_VCPU_IRQ	0xc600010c
#define HC_VM_TOPUP	0xc600010f
#define HC_VM_STATS	0xc6000122
#define HC_TRACE_DRAIN	0xc6000123
#define HC_NOP		0xc6000124
#define HC_VM_CALLS	0xc6000128

/* VCPU_RUN's exits the driver handles itself. */
#define EXIT_UNSHARE_PENDING	6
#define EXIT_IRQ		7
#define EXIT_TOPUP		14

/* The size of one of the hyp's trace records (docs/abi.md). */
#define TRACE_RECORD	64

/* A VM's IPA space (VM_CREATE with x1 = 0). */
#define IPA_LIMIT	BIT_ULL(40)

#define BLK_SIZE	SZ_2M
#define BLK_ORDER	(ilog2(BLK_SIZE) - PAGE_SHIFT)
#define BLK_PAGES	BIT(BLK_ORDER)

/*
 * A VM's memory (its memory file): allocated from Linux, donated at the
 * next PKVM_RUN; 2 MiB blocks (one order-9 allocation each: physically
 * contiguous, one stage-2 block) where they fit, else order-0 pages. A
 * block stays one allocation until the host first maps a page of it; then
 * it is split into order-0 pages, each with a reference count of its own.
 */
struct pkvm_mem {
	u64 ipa;
	unsigned long nr_pages;
	struct page **pages;
	/* Bit i: pages[i] heads a 2 MiB block (one allocation). */
	unsigned long *blocks;
	/* Bit i: that block is not split yet (pages[i] is an order-9 page). */
	unsigned long *whole;
	/* Pages [0, donated) are the guest's. */
	unsigned long donated;
	/*
	 * Guards what follows and every insertion of a page into a process.
	 * Taken under vm->lock and mmap_lock, never across a user copy.
	 */
	struct mutex map_lock;
	/* The memory file's own pages cache, while the file is open. */
	struct address_space *mapping;
	/* Bit i: the driver holds a shared hyp pin for mappings of page i. */
	unsigned long *mapped;
	/* Bit i: a conversion waits for page i's references to go. */
	unsigned long *waiting;
	/* Page index -> pins taken through the memory file. */
	struct xarray fpins;
	/* Counters (PKVM_MEM_INFO). */
	u64 faults, refused, conversions, wait_ns;
};

struct pkvm_vm {
	/* Held by the VM fd, every vCPU fd and the memory fd. */
	struct kref ref;
	/* Guards mem's creation and donation, pins and memory copies. */
	struct mutex lock;
	u64 handle;
	struct pkvm_mem *mem;
	bool all_donated;
	/* Page index -> pins this driver holds for userspace. */
	struct xarray pins;
	/* Guards what follows: pages donated for the VM's tables (lru). */
	struct mutex tables_lock;
	struct list_head tables;
	unsigned long nr_tables;
};

struct pkvm_vcpu {
	struct pkvm_vm *vm;
	u32 index;
	/* One PKVM_RUN at a time. */
	struct mutex run_lock;
	struct page *run_page;
	struct pkvm_run *run;
	/*
	 * The page (index) whose conversion this vCPU's guest re-issues: it
	 * stays refused to faults until the guest's retry has run (-1: none).
	 */
	long converting;
};

/* The hyp's answer: x0 the SMCCC status, x1 0 or a negative errno. */
static inline long hc_err(unsigned long x0, unsigned long x1)
{
	long err = (long)x1;

	if (x0)
		return -EOPNOTSUPP;
	if (err > 0 || err < -MAX_ERRNO)
		return -EIO;
	return err;
}

static inline long hc(u32 fid, u64 a1, u64 a2, u64 a3, u64 a4,
		      struct arm_smccc_res *res)
{
	arm_smccc_1_1_hvc(fid, a1, a2, a3, a4, res);
	return hc_err(res->a0, res->a1);
}

/* A call whose results go past x3: regs in, x0..x17 out. */
static inline long hc_regs(struct arm_smccc_1_2_regs *regs)
{
	struct arm_smccc_1_2_regs args = *regs;

	arm_smccc_1_2_hvc(&args, regs);
	return hc_err(regs->a0, regs->a1);
}

/* Pages and VMs the driver holds now (sysfs: pages, vms). */
extern atomic_long_t pkvm_pages;
extern atomic_long_t pkvm_vms;

long pkvm_vm_donate(struct pkvm_vm *vm);
unsigned long pkvm_table_pages(u64 pa, u64 ipa, u64 size);
long pkvm_vm_topup(struct pkvm_vm *vm, unsigned long n);
void pkvm_vm_free_tables(struct pkvm_vm *vm, u64 returned);
long pkvm_mem_convert(struct pkvm_vm *vm, u64 ipa, long *index);
void pkvm_mem_converted(struct pkvm_vm *vm, long index);
long pkvm_mem_ioctl(struct file *file, unsigned int cmd, unsigned long arg);
int pkvm_mem_mmap(struct file *file, struct vm_area_struct *vma);
void pkvm_mem_unpin_all(struct pkvm_mem *m);
long pkvm_mem_quiesce(struct pkvm_mem *m, unsigned long from);
phys_addr_t pkvm_mem_pa(struct pkvm_mem *m, unsigned long i);
bool pkvm_host_owns(struct pkvm_mem *m, unsigned long i);
bool pkvm_page_quiet(struct pkvm_mem *m, unsigned long i);
void pkvm_vm_unpin_all(struct pkvm_vm *vm);
void pkvm_unpin_counted(struct pkvm_mem *m, struct xarray *pins);
long pkvm_count_pin(struct xarray *pins, unsigned long i, long delta);
void pkvm_mem_free(struct pkvm_mem *m);
long pkvm_create_memory(struct pkvm_vm *vm, void __user *argp);
long pkvm_pin(struct pkvm_vm *vm, void __user *argp, bool pin);
long pkvm_page_state(struct pkvm_vm *vm, void __user *argp);

void pkvm_vm_put(struct pkvm_vm *vm);
int pkvm_new_fd(const char *name, const struct file_operations *fops,
		void *priv, fmode_t mode);

#endif /* _PKVM_HOST_H */
