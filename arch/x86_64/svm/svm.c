/* SVM bring-up on each CPU (EFER.SVME, host save area) and the svm_ops table. */
#include <stdint.h>
#include "cpus.h"
#include "cpu.h"
#include "page_alloc.h"
#include "printk.h"
#include "svm.h"

#define MSR_EFER        0xc0000080
#define EFER_SVME       (1ull << 12)
#define MSR_VM_CR       0xc0010114
#define VM_CR_LOCK      (1ull << 3)
#define VM_CR_SVMDIS    (1ull << 4)
#define MSR_VM_HSAVE_PA 0xc0010117

/* Per CPU: VMRUN's host save area, and the host VMCB the entry stub VMSAVEs to. */
static struct {
    bool enabled;
    uint64_t host_vmcb_pa;
} svm_cpu[CPUS_MAX];

uint64_t svm_host_vmcb(void)
{
    return svm_cpu[cpu_current()->index].host_vmcb_pa;
}

static uint64_t svm_page_zeroed(const char *owner)
{
    uint64_t pa = page_alloc_named(owner, 1);
    if (pa)
        memset((void *)(uintptr_t)pa, 0, PAGE_SIZE);
    return pa;
}

static int svm_cpu_enable(void)
{
    uint32_t me = cpu_current()->index;
    if (svm_cpu[me].enabled)
        return 0;
    const struct cpu_info *cpu = cpu_info_get();
    if (!cpu->svm || !cpu->svm_usable || !cpu->npt) {
        printk("svm: this CPU has no usable AMD-V with nested paging\n");
        return -1;
    }

    /* Firmware may leave SVM disabled but unlocked; then it is ours to enable. */
    uint64_t vm_cr = rdmsr(MSR_VM_CR);
    if (vm_cr & VM_CR_SVMDIS) {
        if (vm_cr & VM_CR_LOCK) {
            printk("svm: VM_CR.SVMDIS is set and locked by firmware\n");
            return -1;
        }
        wrmsr(MSR_VM_CR, vm_cr & ~VM_CR_SVMDIS);
    }
    /* Every SVM instruction raises #UD until EFER.SVME is set. */
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME);

    /* VMRUN stores the host's state here and #VMEXIT reloads it from here. */
    uint64_t hsave = svm_page_zeroed("svm host save area");
    /* VMRUN does not save FS, GS, TR, LDTR or the syscall MSRs: the entry stub VMSAVEs them here. */
    uint64_t host_vmcb = svm_page_zeroed("svm host vmcb");
    if (!hsave || !host_vmcb) {
        printk("svm: no memory for the host save area\n");
        return -1;
    }
    wrmsr(MSR_VM_HSAVE_PA, hsave);
    svm_cpu[me].host_vmcb_pa = host_vmcb;

    /* The slice ends by a physical interrupt (the INTR intercept): the host's
     * LAPIC timer, which every CPU set up before this. */
    if (me == 0)
        printk("svm: enabled, %u ASIDs, %s\n", cpu->svm_asids,
               cpu->nrips ? "next-RIP save" : "no next-RIP save");
    svm_cpu[me].enabled = true;
    return 0;
}

const struct vcpu_ops svm_ops = {
    .name = "AMD-V+NPT",
    .cpu_enable = svm_cpu_enable,
    .vcpu_create = svm_vcpu_create,
    .vcpu_reset = svm_vcpu_reset,
    .vcpu_destroy = svm_vcpu_destroy,
    .vcpu_run = svm_vcpu_run,
    .advance_rip = svm_advance_rip,
    .guest_rip = svm_guest_rip,
    .reg_get = svm_reg_get,
    .reg_set = svm_reg_set,
};
