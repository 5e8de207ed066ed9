// SPDX-License-Identifier: GPL-2.0
/*
 * pkvm-rs host driver: lets Linux userspace create and run protected VMs
 * on the pkvm-rs hypervisor, in KVM's shape: /dev/pkvm makes VM fds, a VM
 * fd makes vCPU fds and a memory fd. Every decision about memory
 * ownership, vCPU state and interrupts is the hypervisor's; the driver
 * lends the guest Linux's memory, turns file descriptors into hypervisor
 * handles and runs vCPUs. ABI: docs/linux-host-abi.md.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/of.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "pkvm_host.h"

atomic_long_t pkvm_vms;

static void vm_release(struct kref *ref)
{
	struct pkvm_vm *vm = container_of(ref, struct pkvm_vm, ref);
	struct arm_smccc_res res;
	long err;

	pkvm_vm_unpin_all(vm);
	err = hc(HC_VM_DESTROY, vm->handle, 0, 0, 0, &res);
	if (err)
		/* Pages the guest may still own must never go back to Linux. */
		pr_err("VM %llu: VM_DESTROY failed (%ld): its memory stays out of Linux\n",
		       vm->handle, err);
	else if (vm->mem)
		pkvm_mem_free(vm->mem);
	if (!err) {
		pkvm_vm_free_tables(vm, res.a3);
		atomic_long_dec(&pkvm_vms);
	}
	kfree(vm);
}

void pkvm_vm_put(struct pkvm_vm *vm)
{
	kref_put(&vm->ref, vm_release);
}

/* A new fd for @priv; on failure the caller still holds its reference. */
int pkvm_new_fd(const char *name, const struct file_operations *fops,
		void *priv, fmode_t mode)
{
	struct file *file;
	int fd;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0)
		return fd;
	file = anon_inode_getfile(name, fops, priv, O_RDWR);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	file->f_mode |= mode;
	fd_install(fd, file);
	return fd;
}

static long vm_stats(struct pkvm_vm *vm, void __user *argp)
{
	struct arm_smccc_1_2_regs r = { .a0 = HC_VM_STATS };
	struct pkvm_vm_stats p;
	long err;

	if (copy_from_user(&p, argp, sizeof(p)))
		return -EFAULT;
	if (memchr_inv(&p.table_pages, 0, sizeof(p) - sizeof(p.ipa)))
		return -EINVAL;
	r.a1 = vm->handle;
	r.a2 = p.ipa;
	err = hc_regs(&r);
	if (err)
		return err;
	p.table_pages = r.a2;
	p.level = r.a3;
	p.state = r.a4;
	r = (struct arm_smccc_1_2_regs){ .a0 = HC_VM_CALLS, .a1 = vm->handle };
	err = hc_regs(&r);
	if (err)
		return err;
	p.shares = r.a2;
	p.unshares = r.a3;
	p.guards = r.a4;
	p.granules = r.a5;
	return copy_to_user(argp, &p, sizeof(p)) ? -EFAULT : 0;
}

/* Runs the vCPU until an exit userspace handles, or a signal. */
static long vcpu_run(struct pkvm_vcpu *vcpu)
{
	struct pkvm_vm *vm = vcpu->vm;
	struct pkvm_run *run = vcpu->run;
	struct arm_smccc_1_2_regs r;
	long err;

	if (!mutex_trylock(&vcpu->run_lock))
		return -EBUSY;
	if (unlikely(!READ_ONCE(vm->all_donated))) {
		mutex_lock(&vm->lock);
		err = pkvm_vm_donate(vm);
		mutex_unlock(&vm->lock);
		if (err)
			goto out;
	}
	r = (struct arm_smccc_1_2_regs){
		.a0 = HC_VCPU_RUN, .a1 = vm->handle, .a2 = vcpu->index,
		.a3 = READ_ONCE(run->reply[0]), .a4 = READ_ONCE(run->reply[1]),
		.a5 = READ_ONCE(run->reply[2]), .a6 = READ_ONCE(run->reply[3]),
	};
	for (;;) {
		if (signal_pending(current)) {
			run->exit_reason = PKVM_EXIT_INTR;
			err = -EINTR;
			break;
		}
		cond_resched();
		err = hc_regs(&r);
		if (err)
			break;
		if (vcpu->converting >= 0 && r.a2 != EXIT_IRQ) {
			/* The guest has run its retry of the unshare. */
			pkvm_mem_converted(vm, vcpu->converting);
			vcpu->converting = -1;
		}
		if (r.a2 == EXIT_TOPUP) {
			/* The guest's call needs tables: donate, run it again. */
			err = pkvm_vm_topup(vm, r.a3);
			if (err)
				break;
			r = (struct arm_smccc_1_2_regs){
				.a0 = HC_VCPU_RUN, .a1 = vm->handle,
				.a2 = vcpu->index,
			};
			continue;
		}
		if (r.a2 == EXIT_UNSHARE_PENDING) {
			/* The driver's own pins: it waits, then runs again. */
			err = pkvm_mem_convert(vm, r.a3, &vcpu->converting);
			if (err == -EINTR) {
				run->exit_reason = PKVM_EXIT_INTR;
				break;
			}
			if (!err) {
				r = (struct arm_smccc_1_2_regs){
					.a0 = HC_VCPU_RUN, .a1 = vm->handle,
					.a2 = vcpu->index,
				};
				continue;
			}
		}
		if (r.a2 != EXIT_IRQ) {
			run->exit_reason = r.a2;
			run->exit[0] = r.a3;
			run->exit[1] = r.a4;
			run->exit[2] = r.a5;
			run->exit[3] = r.a6;
			run->exit[4] = r.a7;
			break;
		}
		run->irq_exits++;
		/* Nothing to reply to an IRQ exit. */
		r = (struct arm_smccc_1_2_regs){
			.a0 = HC_VCPU_RUN, .a1 = vm->handle, .a2 = vcpu->index,
		};
	}
out:
	mutex_unlock(&vcpu->run_lock);
	return err;
}

static long vm_irq(struct pkvm_vm *vm, void __user *argp)
{
	struct arm_smccc_res res;
	struct pkvm_irq p;
	long err;

	if (copy_from_user(&p, argp, sizeof(p)))
		return -EFAULT;
	if (p.pad || p.pending || p.active)
		return -EINVAL;
	arm_smccc_1_1_hvc(HC_VCPU_IRQ, vm->handle, p.vcpu, p.intid, p.op,
			  p.arg[0], p.arg[1], &res);
	err = hc_err(res.a0, res.a1);
	if (err)
		return err;
	if (p.op == PKVM_IRQ_STATE) {
		p.pending = res.a2;
		p.active = res.a3;
	}
	return copy_to_user(argp, &p, sizeof(p)) ? -EFAULT : 0;
}

static long vcpu_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	if (cmd != PKVM_RUN)
		return -ENOTTY;
	return arg ? -EINVAL : vcpu_run(file->private_data);
}

static int vcpu_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct pkvm_vcpu *vcpu = file->private_data;

	if (vma->vm_pgoff || vma_pages(vma) != 1 ||
	    !(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	vm_flags_set(vma, VM_DONTEXPAND);
	return vm_insert_page(vma, vma->vm_start, vcpu->run_page);
}

static int vcpu_release(struct inode *inode, struct file *file)
{
	struct pkvm_vcpu *vcpu = file->private_data;

	pkvm_mem_converted(vcpu->vm, vcpu->converting);
	__free_page(vcpu->run_page);
	pkvm_vm_put(vcpu->vm);
	kfree(vcpu);
	return 0;
}

static const struct file_operations vcpu_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = vcpu_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = vcpu_mmap,
	.release = vcpu_release,
};

static long vm_create_vcpu(struct pkvm_vm *vm, void __user *argp)
{
	struct pkvm_vcpu_init p;
	struct arm_smccc_res res;
	struct pkvm_vcpu *vcpu;
	long err;

	if (copy_from_user(&p, argp, sizeof(p)))
		return -EFAULT;
	if (p.flags & ~PKVM_VCPU_OFF || p.index)
		return -EINVAL;
	vcpu = kzalloc(sizeof(*vcpu), GFP_KERNEL_ACCOUNT);
	if (!vcpu)
		return -ENOMEM;
	vcpu->run_page = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	if (!vcpu->run_page) {
		err = -ENOMEM;
		goto fail;
	}
	vcpu->run = page_address(vcpu->run_page);
	vcpu->converting = -1;
	mutex_init(&vcpu->run_lock);
	err = hc(HC_VCPU_CREATE, vm->handle, p.pc, p.x0, p.flags, &res);
	if (err)
		goto fail;
	vcpu->index = res.a2;
	vcpu->vm = vm;
	p.index = vcpu->index;
	if (copy_to_user(argp, &p, sizeof(p))) {
		err = -EFAULT;
		goto fail;
	}
	kref_get(&vm->ref);
	err = pkvm_new_fd("pkvm-vcpu", &vcpu_fops, vcpu, 0);
	if (err >= 0)
		return err;
	pkvm_vm_put(vm);
fail:
	if (vcpu->run_page)
		__free_page(vcpu->run_page);
	kfree(vcpu);
	return err;
}

static long vm_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct pkvm_vm *vm = file->private_data;
	void __user *argp = (void __user *)arg;

	switch (cmd) {
	case PKVM_CREATE_MEMORY:
		return pkvm_create_memory(vm, argp);
	case PKVM_CREATE_VCPU:
		return vm_create_vcpu(vm, argp);
	case PKVM_PIN:
		return pkvm_pin(vm, argp, true);
	case PKVM_UNPIN:
		return pkvm_pin(vm, argp, false);
	case PKVM_PAGE_STATE:
		return pkvm_page_state(vm, argp);
	case PKVM_VM_STATS:
		return vm_stats(vm, argp);
	case PKVM_IRQ:
		return vm_irq(vm, argp);
	}
	return -ENOTTY;
}

static int vm_fd_release(struct inode *inode, struct file *file)
{
	pkvm_vm_put(file->private_data);
	return 0;
}

static const struct file_operations vm_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = vm_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = vm_fd_release,
};

static long create_vm(unsigned long arg)
{
	struct arm_smccc_res res;
	struct pkvm_vm *vm;
	long err;

	if (arg)
		return -EINVAL;
	vm = kzalloc(sizeof(*vm), GFP_KERNEL_ACCOUNT);
	if (!vm)
		return -ENOMEM;
	kref_init(&vm->ref);
	mutex_init(&vm->lock);
	xa_init(&vm->pins);
	mutex_init(&vm->tables_lock);
	INIT_LIST_HEAD(&vm->tables);
	vm->all_donated = true;
	err = hc(HC_VM_CREATE, 0, 0, 0, 0, &res);
	if (err) {
		kfree(vm);
		return err;
	}
	vm->handle = res.a2;
	atomic_long_inc(&pkvm_vms);
	err = pkvm_new_fd("pkvm-vm", &vm_fops, vm, 0);
	if (err < 0)
		pkvm_vm_put(vm);
	return err;
}

/*
 * Drains the hyp's trace ring of the calling CPU (TRACE_DRAIN) into the
 * user buffer, a page shared with the hyp at a time, until the ring is
 * empty or the buffer full.
 */
static long trace_drain(void __user *argp)
{
	struct arm_smccc_res res;
	struct pkvm_trace p;
	struct page *page;
	phys_addr_t pa;
	u64 n;
	long err;

	if (copy_from_user(&p, argp, sizeof(p)))
		return -EFAULT;
	if (p.records || p.lost || p.size % TRACE_RECORD)
		return -EINVAL;
	page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!page)
		return -ENOMEM;
	pa = page_to_phys(page);
	err = hc(HC_SHARE_HYP, pa, PAGE_SIZE, 0, 0, &res);
	if (err) {
		__free_page(page);
		return err;
	}
	while (p.records * TRACE_RECORD < p.size) {
		n = min_t(u64, PAGE_SIZE, p.size - p.records * TRACE_RECORD);
		err = hc(HC_TRACE_DRAIN, pa, n, 0, 0, &res);
		if (err || !res.a2)
			break;
		p.lost = res.a3;
		if (copy_to_user(u64_to_user_ptr(p.buf + p.records * TRACE_RECORD),
				 page_address(page), res.a2 * TRACE_RECORD)) {
			err = -EFAULT;
			break;
		}
		p.records += res.a2;
	}
	/* A page the hyp may still read must not go back to Linux. */
	if (hc(HC_UNSHARE_HYP, pa, PAGE_SIZE, 0, 0, &res))
		pr_err("the trace page stays shared with the hyp\n");
	else
		__free_page(page);
	if (err)
		return err;
	return copy_to_user(argp, &p, sizeof(p)) ? -EFAULT : 0;
}

static long dev_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	switch (cmd) {
	case PKVM_GET_API_VERSION:
		return arg ? -EINVAL : PKVM_API_VERSION;
	case PKVM_CREATE_VM:
		return create_vm(arg);
	case PKVM_TRACE_DRAIN:
		return trace_drain((void __user *)arg);
	}
	return -ENOTTY;
}

static const struct file_operations dev_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = dev_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static ssize_t pages_show(struct device *dev, struct device_attribute *attr,
			  char *buf)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read(&pkvm_pages));
}
static DEVICE_ATTR_RO(pages);

static ssize_t vms_show(struct device *dev, struct device_attribute *attr,
			char *buf)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read(&pkvm_vms));
}
static DEVICE_ATTR_RO(vms);

static struct attribute *pkvm_attrs[] = {
	&dev_attr_pages.attr,
	&dev_attr_vms.attr,
	NULL,
};
ATTRIBUTE_GROUPS(pkvm);

static struct miscdevice pkvm_dev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "pkvm",
	.fops = &dev_fops,
	.groups = pkvm_groups,
	.mode = 0600,
};

/* The hyp's carve-out node, which only pkvm-rs writes into the host DTB. */
static bool hyp_present(void)
{
	struct device_node *rmem, *np;
	bool found = false;

	rmem = of_find_node_by_path("/reserved-memory");
	if (!rmem)
		return false;
	for_each_child_of_node(rmem, np) {
		if (of_node_name_eq(np, "hyp")) {
			of_node_put(np);
			found = true;
			break;
		}
	}
	of_node_put(rmem);
	return found;
}

static int __init pkvm_init(void)
{
	struct arm_smccc_res res;

	/* Without a hypervisor at EL2, an HVC is undefined: look first. */
	if (!hyp_present() || hc(HC_NOP, 0, 0, 0, 0, &res)) {
		pr_err("no pkvm-rs hypervisor under this kernel\n");
		return -ENODEV;
	}
	return misc_register(&pkvm_dev);
}

static void __exit pkvm_exit(void)
{
	misc_deregister(&pkvm_dev);
}

module_init(pkvm_init);
module_exit(pkvm_exit);
MODULE_DESCRIPTION("Host driver for the pkvm-rs hypervisor's protected VMs");
MODULE_LICENSE("GPL");
