// SPDX-License-Identifier: GPL-2.0
/*
 * pkvm-rs host driver: a VM's table memory. The hyp takes every table of
 * a VM's stage-2 from pages its host donated for that VM (VM_TOPUP,
 * docs/abi.md) and gives them back, zeroed, at VM_DESTROY. The driver
 * tops a VM up before each donation by the tables of the blocks the
 * donation maps, when a vCPU exits TOPUP (a guest's call splitting a
 * block; inside PKVM_RUN: userspace never sees it), and frees the pages
 * once the VM is destroyed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/mm.h>

#include "pkvm_host.h"

/*
 * The tables below @shift-sized entries (1 GiB: 30, 2 MiB: 21) that the
 * range [@ipa, @last] touches and does not map as one block: all of them
 * unless @pa and @ipa are aligned alike, else all but the entries the
 * range covers whole.
 */
static u64 pkvm_tables_below(u64 pa, u64 ipa, u64 last, unsigned int shift)
{
	u64 mask = (1ULL << shift) - 1;
	u64 n = (last >> shift) - (ipa >> shift) + 1;
	u64 first, end;

	if ((pa ^ ipa) & mask)
		return n;
	first = (ipa >> shift) + !!(ipa & mask);
	end = (last >> shift) + ((last & mask) == mask);
	return end > first ? n - (end - first) : n;
}

/*
 * The table pages DONATE_GUEST of [@pa, @pa + @size) at @ipa takes from a
 * VM's 40-bit stage-2 (root at level 1) with no table there yet
 * (hyp_abi::host::donation_table_pages): the hyp maps 1 GiB and 2 MiB
 * blocks wherever the range covers a whole one and @pa and @ipa are both
 * aligned to its size, pages elsewhere, so a table below each 1 GiB and
 * each 2 MiB region the range touches that is not one such block. A
 * guest's call that splits a block later exits TOPUP.
 */
unsigned long pkvm_table_pages(u64 pa, u64 ipa, u64 size)
{
	u64 last;

	if (!size)
		return 0;
	last = ipa + size - 1;
	return pkvm_tables_below(pa, ipa, last, 30) +
	       pkvm_tables_below(pa, ipa, last, 21);
}

/* Donates @n pages of Linux's to @vm's memcache, one VM_TOPUP each. */
long pkvm_vm_topup(struct pkvm_vm *vm, unsigned long n)
{
	struct arm_smccc_res res;
	struct page *page;
	long err;

	for (; n; n--) {
		page = alloc_page(GFP_KERNEL_ACCOUNT);
		if (!page)
			return -ENOMEM;
		err = hc(HC_VM_TOPUP, vm->handle, page_to_phys(page), 1, 0,
			 &res);
		if (err) {
			__free_page(page);
			return err;
		}
		mutex_lock(&vm->tables_lock);
		list_add(&page->lru, &vm->tables);
		vm->nr_tables++;
		mutex_unlock(&vm->tables_lock);
		cond_resched();
	}
	return 0;
}

/*
 * After VM_DESTROY gave back @returned table pages: Linux's again. Pages
 * of a VM whose VM_DESTROY failed are never freed (the hyp may still use
 * them).
 */
void pkvm_vm_free_tables(struct pkvm_vm *vm, u64 returned)
{
	struct page *page, *next;

	if (returned != vm->nr_tables)
		pr_warn("VM %llu: VM_DESTROY gave back %llu table pages, not %lu\n",
			vm->handle, returned, vm->nr_tables);
	list_for_each_entry_safe(page, next, &vm->tables, lru) {
		list_del(&page->lru);
		__free_page(page);
	}
	vm->nr_tables = 0;
}
