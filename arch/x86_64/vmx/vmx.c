/* VMX operation on each CPU: IA32_FEATURE_CONTROL, CR0/CR4 fixed bits, the VMXON region, capabilities, and vmx_ops. */
#include "cpu.h"
#include "cpus.h"
#include "libc.h"
#include "page_alloc.h"
#include "printk.h"
#include "vmx.h"

#define FEATURE_CONTROL_LOCKED (1ull << 0)
#define FEATURE_CONTROL_VMX_OUTSIDE_SMX (1ull << 2)
#define VMX_BASIC_REVISION_MASK 0x7fffffffull
#define VMX_BASIC_REGION_SIZE(b) (((b) >> 32) & 0x1fff)
#define VMX_MISC_PREEMPT_SHIFT(m) ((uint32_t)(m) & 0x1f)
#define PIN_ALLOWED1_PREEMPT (1ull << (32 + 6))

struct vmx_caps vmx_caps;
/* Per CPU: VMXON is per logical processor, each with a region of its own. */
static struct {
    bool on;
    uint64_t vmxon_region;
} vmx_cpu[CPUS_MAX];

static void vmx_read_caps(void)
{
    uint64_t basic = rdmsr(MSR_IA32_VMX_BASIC);
    bool true_ctls = basic & VMX_BASIC_TRUE_CTLS;

    vmx_caps.revision = (uint32_t)(basic & VMX_BASIC_REVISION_MASK);
    /* The TRUE MSRs report which default-1 controls (CR3 exiting and friends)
     * may in fact be cleared; without them the defaults are fixed. */
    vmx_caps.pin = rdmsr(true_ctls ? MSR_IA32_VMX_TRUE_PINBASED : MSR_IA32_VMX_PINBASED);
    vmx_caps.proc = rdmsr(true_ctls ? MSR_IA32_VMX_TRUE_PROCBASED : MSR_IA32_VMX_PROCBASED);
    vmx_caps.exit = rdmsr(true_ctls ? MSR_IA32_VMX_TRUE_EXIT : MSR_IA32_VMX_EXIT);
    vmx_caps.entry = rdmsr(true_ctls ? MSR_IA32_VMX_TRUE_ENTRY : MSR_IA32_VMX_ENTRY);
    /* Secondary controls exist only if the primary ones can activate them. */
    vmx_caps.proc2 = (vmx_caps.proc >> 32) & VMX_PROC_ACTIVATE_SECONDARY ? rdmsr(MSR_IA32_VMX_PROCBASED2) : 0;
    vmx_caps.ept_vpid = vmx_caps.proc2 >> 32 & VMX_PROC2_ENABLE_EPT ? rdmsr(MSR_IA32_VMX_EPT_VPID_CAP) : 0;
    vmx_caps.cr0_fixed0 = rdmsr(MSR_IA32_VMX_CR0_FIXED0);
    vmx_caps.cr0_fixed1 = rdmsr(MSR_IA32_VMX_CR0_FIXED1);
    vmx_caps.cr4_fixed0 = rdmsr(MSR_IA32_VMX_CR4_FIXED0);
    vmx_caps.cr4_fixed1 = rdmsr(MSR_IA32_VMX_CR4_FIXED1);
    vmx_caps.preempt_shift = VMX_MISC_PREEMPT_SHIFT(rdmsr(MSR_IA32_VMX_MISC));
    vmx_caps.unrestricted = (vmx_caps.proc2 >> 32) & VMX_PROC2_UNRESTRICTED_GUEST;
}

static int vmx_cpu_enable(void)
{
    uint32_t me = cpu_current()->index;
    if (vmx_cpu[me].on)
        return 0;

    /* Firmware may leave IA32_FEATURE_CONTROL unlocked; VMXON raises #GP
     * until it is locked with VMX-outside-SMX enabled, so lock it ourselves. */
    uint64_t fc = rdmsr(MSR_IA32_FEATURE_CONTROL);
    if (!(fc & FEATURE_CONTROL_LOCKED)) {
        fc |= FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX;
        wrmsr(MSR_IA32_FEATURE_CONTROL, fc);
    } else if (!(fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX)) {
        printk("vmx: IA32_FEATURE_CONTROL is locked with VMX off (%#llx)\n", (unsigned long long)fc);
        return -1;
    }

    vmx_read_caps();
    uint64_t basic = rdmsr(MSR_IA32_VMX_BASIC);
    if (VMX_BASIC_REGION_SIZE(basic) > PAGE_SIZE) {
        printk("vmx: VMCS region of %llu bytes does not fit a page\n",
               (unsigned long long)VMX_BASIC_REGION_SIZE(basic));
        return -1;
    }
    if (!(vmx_caps.pin & PIN_ALLOWED1_PREEMPT)) {
        printk("vmx: this CPU has no VMX-preemption timer: slices cannot end\n");
        return -1;
    }

    /* VMXON (and VM entry) require CR0 and CR4 to hold every bit the fixed
     * MSRs pin: FIXED0 bits set, bits clear in FIXED1 clear. CR4.VMXE is
     * among FIXED0's. */
    uint64_t cr0 = (read_cr0() | vmx_caps.cr0_fixed0) & vmx_caps.cr0_fixed1;
    uint64_t cr4 = (read_cr4() | vmx_caps.cr4_fixed0 | CR4_VMXE) & vmx_caps.cr4_fixed1;
    __asm__ volatile("mov %0, %%cr0" : : "r"(cr0) : "memory");
    __asm__ volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");

    uint64_t vmxon_region = vmx_cpu[me].vmxon_region;
    if (!vmxon_region) {
        vmxon_region = vmx_cpu[me].vmxon_region = page_alloc_named("vmx vmxon", 1);
        if (!vmxon_region) {
            printk("vmx: no page for the VMXON region\n");
            return -1;
        }
    }
    /* The VMXON region starts with the VMCS revision identifier, bit 31 clear. */
    memset((void *)(uintptr_t)vmxon_region, 0, PAGE_SIZE);
    *(volatile uint32_t *)(uintptr_t)vmxon_region = vmx_caps.revision;

    bool fail;
    __asm__ volatile("vmxon %1" : "=@ccbe"(fail) : "m"(vmxon_region) : "cc", "memory");
    if (fail) {
        printk("vmx: VMXON failed (revision %#x, region %#llx)\n", vmx_caps.revision,
               (unsigned long long)vmxon_region);
        return -1;
    }
    vmx_cpu[me].on = true;
    if (me == 0)
        printk("vmx: VMX on: VMCS revision %#x, %s controls, preemption timer at TSC/%u, %s\n",
           vmx_caps.revision, basic & VMX_BASIC_TRUE_CTLS ? "TRUE" : "default",
           1u << vmx_caps.preempt_shift,
           vmx_caps.unrestricted ? "unrestricted guest" : "no unrestricted guest");
    return 0;
}

const struct vcpu_ops vmx_ops = {
    .name = "VT-x+EPT",
    .cpu_enable = vmx_cpu_enable,
    .vcpu_create = vmcs_create,
    .vcpu_reset = vmcs_reset,
    .vcpu_destroy = vmcs_destroy,
    .vcpu_run = vmx_exit_run,
    .advance_rip = vmcs_advance_rip,
    .guest_rip = vmcs_guest_rip,
    .reg_get = vmcs_reg_get,
    .reg_set = vmcs_reg_set,
};
