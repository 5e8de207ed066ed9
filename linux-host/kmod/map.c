// SPDX-License-Identifier: GPL-2.0
/*
 * pkvm-rs host driver: the memory file's mappings (guest_memfd semantics,
 * docs/guest-memfd.md). A page the guest shares with the host faults into
 * a process in place; a private page is a SIGBUS. Every page mapped into a
 * process is covered by a shared hyp pin the driver holds, so the guest's
 * MEM_UNSHARE of it exits UNSHARE_PENDING: the driver zaps the page from
 * every process, waits until its reference count is back to the driver's
 * own, then drops the pin and runs the guest again, which re-issues the
 * call. Pins taken through the file hold a conversion back the same way.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/mm.h>
#include <linux/sched/signal.h>
#include <linux/uaccess.h>

#include "pkvm_host.h"

static unsigned long fpin_count(struct pkvm_mem *m, unsigned long i)
{
	return xa_to_value(xa_load(&m->fpins, i) ?: xa_mk_value(0));
}

/* Pages of [from, from + n) whose bit is set in @map. */
static unsigned long weight(const unsigned long *map, unsigned long from,
			    unsigned long n)
{
	unsigned long i, w = 0;

	for (i = find_next_bit(map, from + n, from); i < from + n;
	     i = find_next_bit(map, from + n, i + 1))
		w++;
	return w;
}

/* Zaps page @i from every process that maps the file. */
static void zap_page(struct pkvm_mem *m, unsigned long i)
{
	lockdep_assert_held(&m->map_lock);
	if (m->mapping)
		unmap_mapping_range(m->mapping, (loff_t)i << PAGE_SHIFT,
				    PAGE_SIZE, 1);
}

/* The first page of the block that holds page @i, if any, else -1. */
static long block_of(struct pkvm_mem *m, unsigned long i)
{
	unsigned long b = i - (((m->ipa >> PAGE_SHIFT) + i) & (BLK_PAGES - 1));

	return b <= i && test_bit(b, m->blocks) ? b : -1;
}

/*
 * Nothing but the driver references page @i (after a zap). A block not
 * split yet was never mapped, so nothing can reference its pages.
 */
bool pkvm_page_quiet(struct pkvm_mem *m, unsigned long i)
{
	long b = block_of(m, i);

	/* Pairs with GUP-fast's re-check of the PTE after its reference. */
	smp_mb();
	if (b >= 0 && test_bit(b, m->whole))
		return true;
	return page_ref_count(m->pages[i]) == 1;
}

/* Gives page @i a reference count of its own: splits its block. */
static void split_block(struct pkvm_mem *m, unsigned long i)
{
	long b = block_of(m, i);

	lockdep_assert_held(&m->map_lock);
	if (b >= 0 && test_and_clear_bit(b, m->whole))
		split_page(m->pages[b], BLK_ORDER);
}

/*
 * May page @i be mapped into a process? 0: yes, covered by the driver's
 * pin (or the host's own page); else the fault is refused.
 */
static int map_pin(struct pkvm_vm *vm, unsigned long i)
{
	struct pkvm_mem *m = vm->mem;
	struct arm_smccc_res res;
	int err;

	lockdep_assert_held(&m->map_lock);
	if (test_bit(i, m->waiting))
		return -EBUSY;
	/* Not the guest's yet: the driver's page (donation zaps it). */
	if (i >= m->donated || test_bit(i, m->mapped))
		return 0;
	err = hc(HC_PIN, pkvm_mem_pa(m, i), 0, 0, 0, &res);
	if (!err) {
		set_bit(i, m->mapped);
		return 0;
	}
	/* A page the guest relinquished is the host's. */
	if (err == -EPERM && pkvm_host_owns(m, i))
		return 0;
	return err;
}

static vm_fault_t mem_fault(struct vm_fault *vmf)
{
	struct pkvm_vm *vm = vmf->vma->vm_file->private_data;
	struct pkvm_mem *m = vm->mem;
	unsigned long i = vmf->pgoff;
	int err = -EINVAL;

	if (i >= m->nr_pages)
		return VM_FAULT_SIGBUS;
	mutex_lock(&m->map_lock);
	err = map_pin(vm, i);
	if (!err) {
		split_block(m, i);
		err = vm_insert_page(vmf->vma, vmf->address & PAGE_MASK,
				     m->pages[i]);
		/* Another thread's fault mapped it first. */
		if (err == -EBUSY)
			err = 0;
	}
	if (err)
		m->refused++;
	else
		m->faults++;
	mutex_unlock(&m->map_lock);
	if (err == -ENOMEM)
		return VM_FAULT_OOM;
	return err ? VM_FAULT_SIGBUS : VM_FAULT_NOPAGE;
}

static const struct vm_operations_struct mem_vm_ops = {
	.fault = mem_fault,
};

int pkvm_mem_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct pkvm_vm *vm = file->private_data;

	/* Shared only: a private copy would not be the guest's page. */
	if (!(vma->vm_flags & VM_SHARED) ||
	    vma->vm_pgoff > vm->mem->nr_pages ||
	    vma_pages(vma) > vm->mem->nr_pages - vma->vm_pgoff)
		return -EINVAL;
	vm_flags_set(vma, VM_MIXEDMAP | VM_DONTEXPAND | VM_DONTDUMP);
	vma->vm_ops = &mem_vm_ops;
	return 0;
}

/*
 * The guest's MEM_UNSHARE of @ipa waits on host pins (UNSHARE_PENDING).
 * If the driver holds them (mappings, pins through the file), it takes
 * the page from every process, waits until nothing but itself references
 * it and no pin through the file is left, drops its pin: 0, run the guest
 * again (*@index: the page, still refused to faults until the guest's
 * retry has run: pkvm_mem_converted()). 1: not the driver's pins, the
 * exit is userspace's. -EINTR: a signal came first (the guest's retry
 * comes back here).
 */
long pkvm_mem_convert(struct pkvm_vm *vm, u64 ipa, long *index)
{
	struct pkvm_mem *m = vm->mem;
	struct arm_smccc_res res;
	unsigned long i;
	u64 start;

	if (!m || ipa < m->ipa || (ipa - m->ipa) >> PAGE_SHIFT >= m->nr_pages)
		return 1;
	i = (ipa - m->ipa) >> PAGE_SHIFT;
	mutex_lock(&m->map_lock);
	if (!test_bit(i, m->mapped) && !fpin_count(m, i)) {
		mutex_unlock(&m->map_lock);
		return 1;
	}
	/* From here on a fault on the page is refused. */
	set_bit(i, m->waiting);
	zap_page(m, i);
	mutex_unlock(&m->map_lock);
	start = ktime_get_ns();
	while (!pkvm_page_quiet(m, i) || fpin_count(m, i)) {
		if (signal_pending(current))
			return -EINTR;
		schedule_timeout_interruptible(1);
	}
	mutex_lock(&m->map_lock);
	if (test_bit(i, m->mapped)) {
		if (hc(HC_UNPIN, pkvm_mem_pa(m, i), 0, 0, 0, &res))
			pr_err("VM %llu: the mapping pin of IPA %#llx stays\n",
			       vm->handle, ipa);
		else
			clear_bit(i, m->mapped);
	}
	*index = i;
	m->conversions++;
	m->wait_ns += ktime_get_ns() - start;
	mutex_unlock(&m->map_lock);
	return 0;
}

/*
 * The guest has run its retry of the call that waited for page @index
 * (the vCPU left the guest for another reason than an interrupt): faults
 * may map the page again (if it is still, or again, shared). Until then a
 * process faulting it in again would hold the conversion back again, as
 * often as it wins that race.
 */
void pkvm_mem_converted(struct pkvm_vm *vm, long index)
{
	struct pkvm_mem *m = vm->mem;

	if (!m || index < 0)
		return;
	mutex_lock(&m->map_lock);
	clear_bit(index, m->waiting);
	mutex_unlock(&m->map_lock);
}

/* Drops every pin the memory file holds (the VM's teardown). */
void pkvm_mem_unpin_all(struct pkvm_mem *m)
{
	struct arm_smccc_res res;
	unsigned long i;

	for_each_set_bit(i, m->mapped, m->nr_pages)
		hc(HC_UNPIN, pkvm_mem_pa(m, i), 0, 0, 0, &res);
	bitmap_zero(m->mapped, m->nr_pages);
	pkvm_unpin_counted(m, &m->fpins);
}

/*
 * PKVM_MEM_PIN: a hyp pin on a page the guest shares, held by the file
 * until PKVM_MEM_UNPIN or the VM's end; a conversion of the page waits for
 * it. An exclusive one is refused (-EBUSY) while anything else references
 * the page: its mappings go first, then no other reference may be left.
 */
static long mem_pin(struct pkvm_vm *vm, void __user *argp, bool pin)
{
	struct pkvm_mem *m = vm->mem;
	struct arm_smccc_res res;
	struct pkvm_mem_pin p;
	unsigned long i, n;
	bool excl;
	long err;

	if (copy_from_user(&p, argp, sizeof(p)))
		return -EFAULT;
	if (p.pad || p.flags & ~(pin ? PKVM_MEM_PIN_EXCLUSIVE : 0) ||
	    !PAGE_ALIGNED(p.offset) || p.offset >> PAGE_SHIFT >= m->nr_pages)
		return -EINVAL;
	i = p.offset >> PAGE_SHIFT;
	excl = p.flags & PKVM_MEM_PIN_EXCLUSIVE;
	mutex_lock(&m->map_lock);
	n = fpin_count(m, i);
	if (!pin) {
		err = n ? hc(HC_UNPIN, pkvm_mem_pa(m, i), 0, 0, 0, &res) :
			  -EINVAL;
		goto count;
	}
	/* Only a page the guest owns and shares can be pinned. */
	err = i < m->donated ? 0 : -EPERM;
	if (!err && test_bit(i, m->waiting))
		err = -EBUSY;
	if (!err)
		err = xa_reserve(&m->fpins, i, GFP_KERNEL);
	if (!err && excl) {
		zap_page(m, i);
		if (!pkvm_page_quiet(m, i))
			err = -EBUSY;
		else if (test_bit(i, m->mapped) &&
			 !hc(HC_UNPIN, pkvm_mem_pa(m, i), 0, 0, 0, &res))
			clear_bit(i, m->mapped);
	}
	if (!err)
		err = hc(HC_PIN, pkvm_mem_pa(m, i), excl, 0, 0, &res);
	if (err && !n)
		xa_release(&m->fpins, i);
count:
	/* Cannot fail: the slot is there (reserved above, or counting). */
	if (!err)
		pkvm_count_pin(&m->fpins, i, pin ? 1 : -1);
	mutex_unlock(&m->map_lock);
	return err;
}

static long mem_info(struct pkvm_vm *vm, void __user *argp)
{
	struct pkvm_mem *m = vm->mem;
	struct pkvm_mem_info p = { .size = (u64)m->nr_pages << PAGE_SHIFT };
	unsigned long i, w;
	void *entry;

	mutex_lock(&m->map_lock);
	for_each_set_bit(i, m->blocks, m->nr_pages) {
		p.blocks++;
		if (test_bit(i, m->whole))
			p.whole_blocks++;
		w = weight(m->mapped, i, BLK_PAGES);
		if (w && w < BLK_PAGES)
			p.split_blocks++;
	}
	p.mapped = bitmap_weight(m->mapped, m->nr_pages);
	p.waiting = bitmap_weight(m->waiting, m->nr_pages);
	xa_for_each(&m->fpins, i, entry)
		p.pins += xa_to_value(entry);
	p.faults = m->faults;
	p.refused = m->refused;
	p.conversions = m->conversions;
	p.wait_ns = m->wait_ns;
	mutex_unlock(&m->map_lock);
	return copy_to_user(argp, &p, sizeof(p)) ? -EFAULT : 0;
}

long pkvm_mem_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct pkvm_vm *vm = file->private_data;
	void __user *argp = (void __user *)arg;

	switch (cmd) {
	case PKVM_MEM_PIN:
		return mem_pin(vm, argp, true);
	case PKVM_MEM_UNPIN:
		return mem_pin(vm, argp, false);
	case PKVM_MEM_INFO:
		return mem_info(vm, argp);
	}
	return -ENOTTY;
}
