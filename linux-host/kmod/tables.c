// SPDX-License-Identifier: GPL-2.0
/*
 * pkvm-rs host driver: a VM's table memory. The hyp takes every table of
 * a VM's stage-2 from pages its host donated for that VM (VM_TOPUP,
 * docs/abi.md) and gives them back, zeroed, at VM_DESTROY. The driver
 * tops a VM up before each donation by what the donated memory can ever
 * need, when a vCPU exits TOPUP (inside PKVM_RUN: userspace never sees
 * it), and frees the pages once the VM is destroyed.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/gfp.h>
#include <linux/mm.h>

#include "pkvm_host.h"

/*
 * The table pages a VM's 40-bit stage-2 (root at level 1) can need over
 * [@ipa, @ipa + @size), split down to 4 KiB pages: one per 1 GiB and one
 * per 2 MiB region the range touches (hyp_abi::host::vm_table_pages).
 */
unsigned long pkvm_table_pages(u64 ipa, u64 size)
{
	u64 last;

	if (!size)
		return 0;
	last = ipa + size - 1;
	return (last >> 30) - (ipa >> 30) + 1 + (last >> 21) - (ipa >> 21) + 1;
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
