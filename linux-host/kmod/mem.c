// SPDX-License-Identifier: GPL-2.0
/*
 * pkvm-rs host driver: a VM's memory file. Its pages come from Linux's
 * page allocator (2 MiB blocks where they fit), userspace fills them with
 * pwrite or through a mapping, the driver donates them to the guest at the
 * VM's next run and gives them back to Linux when the VM is destroyed.
 * Mappings, conversions and pins through the file: map.c.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "pkvm_host.h"

atomic_long_t pkvm_pages;

phys_addr_t pkvm_mem_pa(struct pkvm_mem *m, unsigned long i)
{
	return page_to_phys(m->pages[i]);
}

/* The page index of @ipa in @vm's memory, or -EINVAL. */
static long ipa_index(struct pkvm_vm *vm, u64 ipa)
{
	struct pkvm_mem *m = vm->mem;

	if (!m || !PAGE_ALIGNED(ipa) || ipa < m->ipa ||
	    (ipa - m->ipa) >> PAGE_SHIFT >= m->nr_pages)
		return -EINVAL;
	return (ipa - m->ipa) >> PAGE_SHIFT;
}

void pkvm_mem_free(struct pkvm_mem *m)
{
	unsigned long i = 0;

	while (m->pages && i < m->nr_pages) {
		if (m->whole && test_bit(i, m->whole)) {
			__free_pages(m->pages[i], BLK_ORDER);
			atomic_long_sub(BLK_PAGES, &pkvm_pages);
			i += BLK_PAGES;
			continue;
		}
		if (m->pages[i]) {
			__free_page(m->pages[i]);
			atomic_long_dec(&pkvm_pages);
		}
		i++;
	}
	xa_destroy(&m->fpins);
	bitmap_free(m->waiting);
	bitmap_free(m->mapped);
	bitmap_free(m->whole);
	bitmap_free(m->blocks);
	kvfree(m->pages);
	kfree(m);
}

/*
 * Zeroed pages for [ipa, ipa + size): 2 MiB blocks where they fit, each one
 * order-9 allocation (not compound: split_page() can make it 512 order-0
 * pages when the host first maps one of them).
 */
static struct pkvm_mem *mem_alloc(u64 ipa, u64 size)
{
	const gfp_t gfp = GFP_KERNEL_ACCOUNT | __GFP_ZERO;
	struct pkvm_mem *m;
	unsigned long i, j;
	struct page *page;
	long err = -ENOMEM;

	m = kzalloc(sizeof(*m), GFP_KERNEL_ACCOUNT);
	if (!m)
		return ERR_PTR(-ENOMEM);
	m->ipa = ipa;
	m->nr_pages = size >> PAGE_SHIFT;
	mutex_init(&m->map_lock);
	xa_init(&m->fpins);
	m->pages = kvcalloc(m->nr_pages, sizeof(*m->pages), GFP_KERNEL_ACCOUNT);
	m->blocks = bitmap_zalloc(m->nr_pages, GFP_KERNEL_ACCOUNT);
	m->whole = bitmap_zalloc(m->nr_pages, GFP_KERNEL_ACCOUNT);
	m->mapped = bitmap_zalloc(m->nr_pages, GFP_KERNEL_ACCOUNT);
	m->waiting = bitmap_zalloc(m->nr_pages, GFP_KERNEL_ACCOUNT);
	if (!m->pages || !m->blocks || !m->whole || !m->mapped || !m->waiting)
		goto fail;
	for (i = 0; i < m->nr_pages;) {
		if (fatal_signal_pending(current)) {
			err = -EINTR;
			goto fail;
		}
		cond_resched();
		page = NULL;
		if (IS_ALIGNED(ipa + ((u64)i << PAGE_SHIFT), BLK_SIZE) &&
		    m->nr_pages - i >= BLK_PAGES)
			page = alloc_pages(gfp | __GFP_NOWARN | __GFP_NORETRY,
					   BLK_ORDER);
		if (page) {
			for (j = 0; j < BLK_PAGES; j++)
				m->pages[i + j] = nth_page(page, j);
			set_bit(i, m->blocks);
			set_bit(i, m->whole);
			atomic_long_add(BLK_PAGES, &pkvm_pages);
			i += BLK_PAGES;
			continue;
		}
		m->pages[i] = alloc_page(gfp);
		if (!m->pages[i])
			goto fail;
		atomic_long_inc(&pkvm_pages);
		i++;
	}
	return m;
fail:
	pkvm_mem_free(m);
	return ERR_PTR(err);
}

/*
 * Takes pages [from, end) back from every process (their mappings are
 * zapped) and checks that nothing else holds them: -EBUSY if a page still
 * has a reference beyond the driver's own (e.g. a GUP pin). Under
 * map_lock, so no fault maps them again.
 */
long pkvm_mem_quiesce(struct pkvm_mem *m, unsigned long from)
{
	unsigned long i;

	lockdep_assert_held(&m->map_lock);
	if (m->mapping && from < m->nr_pages)
		unmap_mapping_range(m->mapping, (loff_t)from << PAGE_SHIFT, 0, 1);
	for (i = from; i < m->nr_pages; i++)
		if (!pkvm_page_quiet(m, i))
			return -EBUSY;
	return 0;
}

/*
 * Donates what is not donated yet, a physically contiguous run a call (the
 * hyp maps its aligned 2 MiB and 1 GiB parts as blocks), once no process
 * maps those pages and nothing else references them.
 */
long pkvm_vm_donate(struct pkvm_vm *vm)
{
	struct pkvm_mem *m = vm->mem;
	struct arm_smccc_res res;
	unsigned long i, n;
	long err = 0;
	u64 ipa;

	lockdep_assert_held(&vm->lock);
	if (!m)
		goto done;
	mutex_lock(&m->map_lock);
	err = pkvm_mem_quiesce(m, m->donated);
	while (!err && m->donated < m->nr_pages) {
		i = m->donated;
		n = 1;
		while (i + n < m->nr_pages && n < (SZ_1G >> PAGE_SHIFT) &&
		       pkvm_mem_pa(m, i + n) == pkvm_mem_pa(m, i) + n * PAGE_SIZE)
			n++;
		/* The tables of its blocks first (a split exits TOPUP). */
		ipa = m->ipa + ((u64)i << PAGE_SHIFT);
		err = pkvm_vm_topup(vm, pkvm_table_pages(pkvm_mem_pa(m, i), ipa,
							 n << PAGE_SHIFT));
		if (err)
			break;
		err = hc(HC_DONATE_GUEST, vm->handle, pkvm_mem_pa(m, i), ipa,
			 n << PAGE_SHIFT, &res);
		if (!err)
			m->donated = i + n;
		cond_resched();
	}
	mutex_unlock(&m->map_lock);
	if (err)
		return err;
done:
	WRITE_ONCE(vm->all_donated, true);
	return 0;
}

/* Drops every pin counted in @pins (page index -> count) on @m's pages. */
void pkvm_unpin_counted(struct pkvm_mem *m, struct xarray *pins)
{
	struct arm_smccc_res res;
	unsigned long i, n;
	void *entry;

	xa_for_each(pins, i, entry)
		for (n = xa_to_value(entry); n; n--)
			hc(HC_UNPIN, pkvm_mem_pa(m, i), 0, 0, 0, &res);
	xa_destroy(pins);
}

void pkvm_vm_unpin_all(struct pkvm_vm *vm)
{
	if (!vm->mem)
		return;
	pkvm_unpin_counted(vm->mem, &vm->pins);
	pkvm_mem_unpin_all(vm->mem);
}

/* Adds @delta to the pins of page @i counted in @pins; 0 frees the slot. */
long pkvm_count_pin(struct xarray *pins, unsigned long i, long delta)
{
	unsigned long n = xa_to_value(xa_load(pins, i) ?: xa_mk_value(0));

	n += delta;
	if (!n) {
		xa_erase(pins, i);
		return 0;
	}
	return xa_err(xa_store(pins, i, xa_mk_value(n), GFP_KERNEL));
}

/* Is page @i the host's again (the guest relinquished it)? */
bool pkvm_host_owns(struct pkvm_mem *m, unsigned long i)
{
	struct arm_smccc_1_2_regs r = {
		.a0 = HC_PAGE_STATE, .a1 = pkvm_mem_pa(m, i),
	};

	/* Owned, or not mapped yet and the host's own (docs/abi.md). */
	return !hc_regs(&r) && (r.a2 == 1 || (r.a2 == 0 && r.a5 == 0));
}

/*
 * Pins page @i for a copy if the guest owns it: true if pinned. Before the
 * guest owns a page it is the driver's; afterwards a page it shares with
 * the host is pinned for the copy so that it stays shared, and one it
 * gave back is the host's. Any other is refused (-EPERM).
 */
static long pin_for_copy(struct pkvm_mem *m, unsigned long i, bool *pinned)
{
	struct arm_smccc_res res;
	long err;

	*pinned = false;
	if (i >= m->donated)
		return 0;
	err = hc(HC_PIN, pkvm_mem_pa(m, i), 0, 0, 0, &res);
	if (!err)
		*pinned = true;
	else if (err == -EPERM && pkvm_host_owns(m, i))
		err = 0;
	return err;
}

/* Copies between userspace and guest memory at @pos. */
static ssize_t mem_rw(struct file *file, char __user *buf, size_t len,
		      loff_t *pos, bool write)
{
	struct pkvm_vm *vm = file->private_data;
	struct pkvm_mem *m = vm->mem;
	u64 size = (u64)m->nr_pages << PAGE_SHIFT;
	struct arm_smccc_res res;
	size_t done = 0, off, n;
	unsigned long i;
	bool pinned;
	long err = 0;
	void *va;

	if (*pos < 0)
		return -EINVAL;
	if (*pos >= size || !len)
		return write && len ? -ENOSPC : 0;
	len = min_t(u64, len, size - *pos);
	mutex_lock(&vm->lock);
	while (done < len) {
		i = (*pos + done) >> PAGE_SHIFT;
		off = (*pos + done) & ~PAGE_MASK;
		n = min(len - done, PAGE_SIZE - off);
		err = pin_for_copy(m, i, &pinned);
		if (err)
			break;
		va = kmap_local_page(m->pages[i]);
		if (write)
			err = copy_from_user(va + off, buf + done, n);
		else
			err = copy_to_user(buf + done, va + off, n);
		kunmap_local(va);
		/* A pin the hyp could not drop now is dropped at teardown. */
		if (pinned && hc(HC_UNPIN, pkvm_mem_pa(m, i), 0, 0, 0, &res) &&
		    pkvm_count_pin(&vm->pins, i, 1))
			pr_err("VM %llu: a page stays pinned\n", vm->handle);
		if (err) {
			err = -EFAULT;
			break;
		}
		done += n;
		if (fatal_signal_pending(current))
			break;
		cond_resched();
	}
	mutex_unlock(&vm->lock);
	*pos += done;
	return done ? done : err;
}

static ssize_t mem_read(struct file *file, char __user *buf, size_t len,
			loff_t *pos)
{
	return mem_rw(file, buf, len, pos, false);
}

static ssize_t mem_write(struct file *file, const char __user *buf,
			 size_t len, loff_t *pos)
{
	return mem_rw(file, (char __user *)buf, len, pos, true);
}

static int mem_release(struct inode *inode, struct file *file)
{
	struct pkvm_vm *vm = file->private_data;

	/* No mapping is left: each holds the file. */
	mutex_lock(&vm->mem->map_lock);
	vm->mem->mapping = NULL;
	mutex_unlock(&vm->mem->map_lock);
	pkvm_vm_put(vm);
	return 0;
}

static const struct file_operations mem_fops = {
	.owner = THIS_MODULE,
	.read = mem_read,
	.write = mem_write,
	.mmap = pkvm_mem_mmap,
	.unlocked_ioctl = pkvm_mem_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = mem_release,
};

/*
 * The memory fd: a file with an inode of its own, so that its mappings
 * (its page cache's i_mmap) are this VM's alone and can be zapped.
 */
static int mem_new_fd(struct pkvm_vm *vm)
{
	struct file *file;
	int fd;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0)
		return fd;
	file = anon_inode_create_getfile("[pkvm-mem]", &mem_fops, vm, O_RDWR,
					 NULL);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	file->f_mode |= FMODE_PREAD | FMODE_PWRITE;
	vm->mem->mapping = file->f_mapping;
	fd_install(fd, file);
	return fd;
}

long pkvm_create_memory(struct pkvm_vm *vm, void __user *argp)
{
	struct pkvm_memory p;
	struct pkvm_mem *m;
	long fd;

	if (copy_from_user(&p, argp, sizeof(p)))
		return -EFAULT;
	if (p.flags || !p.size || !PAGE_ALIGNED(p.ipa) ||
	    !PAGE_ALIGNED(p.size) || p.size > IPA_LIMIT ||
	    p.ipa > IPA_LIMIT - p.size)
		return -EINVAL;
	if (p.size >> PAGE_SHIFT > totalram_pages())
		return -ENOMEM;
	mutex_lock(&vm->lock);
	if (vm->mem) {
		fd = -EEXIST;
		goto out;
	}
	m = mem_alloc(p.ipa, p.size);
	if (IS_ERR(m)) {
		fd = PTR_ERR(m);
		goto out;
	}
	/* Set first: the fd is usable as soon as it is installed. */
	vm->mem = m;
	kref_get(&vm->ref);
	fd = mem_new_fd(vm);
	if (fd < 0) {
		vm->mem = NULL;
		pkvm_mem_free(m);
		/* Not the last reference: the caller's VM fd holds one. */
		pkvm_vm_put(vm);
		goto out;
	}
	WRITE_ONCE(vm->all_donated, false);
out:
	mutex_unlock(&vm->lock);
	return fd;
}

long pkvm_pin(struct pkvm_vm *vm, void __user *argp, bool pin)
{
	struct arm_smccc_res res;
	struct pkvm_pin p;
	long i, err;

	if (copy_from_user(&p, argp, sizeof(p)))
		return -EFAULT;
	if (p.pad || p.flags & ~(pin ? PKVM_PIN_EXCLUSIVE : 0))
		return -EINVAL;
	mutex_lock(&vm->lock);
	i = ipa_index(vm, p.ipa);
	if (i < 0) {
		err = i;
		goto out;
	}
	if (pin) {
		/* The slot first: once the hyp pinned, counting cannot fail. */
		err = xa_reserve(&vm->pins, i, GFP_KERNEL);
		if (!err)
			err = hc(HC_PIN, pkvm_mem_pa(vm->mem, i), p.flags, 0, 0, &res);
		if (!err)
			pkvm_count_pin(&vm->pins, i, 1);
		else
			xa_release(&vm->pins, i);
	} else if (!xa_load(&vm->pins, i)) {
		err = -EINVAL;
	} else {
		err = hc(HC_UNPIN, pkvm_mem_pa(vm->mem, i), 0, 0, 0, &res);
		if (!err)
			pkvm_count_pin(&vm->pins, i, -1);
	}
out:
	mutex_unlock(&vm->lock);
	return err;
}

long pkvm_page_state(struct pkvm_vm *vm, void __user *argp)
{
	struct arm_smccc_res res;
	struct pkvm_page_state p;
	long i, err;

	if (copy_from_user(&p, argp, sizeof(p)))
		return -EFAULT;
	if (p.state || p.pins)
		return -EINVAL;
	mutex_lock(&vm->lock);
	i = ipa_index(vm, p.ipa);
	err = i < 0 ? i : hc(HC_PAGE_STATE, pkvm_mem_pa(vm->mem, i), 0, 0, 0, &res);
	mutex_unlock(&vm->lock);
	if (err)
		return err;
	p.state = res.a2;
	p.pins = res.a3;
	return copy_to_user(argp, &p, sizeof(p)) ? -EFAULT : 0;
}

