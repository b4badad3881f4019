/* Identifies the boot CPU and decides which virtualization backend it can run. */
#include "cpu.h"

#define MSR_IA32_FEATURE_CONTROL 0x3a
#define FEATURE_CONTROL_LOCKED (1ull << 0)
#define FEATURE_CONTROL_VMX_OUTSIDE_SMX (1ull << 2)
#define MSR_IA32_VMX_PROCBASED_CTLS 0x482
#define MSR_IA32_VMX_PROCBASED_CTLS2 0x48b
#define MSR_VM_CR 0xc0010114
#define VM_CR_LOCK (1ull << 3)
#define VM_CR_SVMDIS (1ull << 4)

static struct cpu_info info;

static void store_regs(char *dst, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
    const uint32_t regs[4] = { a, b, c, d };
    for (int i = 0; i < 16; i++)
        dst[i] = (char)(regs[i / 4] >> (8 * (i % 4)));
}

static void identify_names(void)
{
    uint32_t a, b, c, d;

    cpuid(0, 0, &a, &b, &c, &d);
    info.max_leaf = a;
    /* The vendor string is spread over EBX, EDX, ECX in that order. */
    store_regs(info.vendor, b, d, c, 0);
    info.vendor[12] = '\0';

    cpuid(0x80000000, 0, &a, &b, &c, &d);
    info.max_ext_leaf = a >= 0x80000000 ? a : 0;
    info.brand[0] = '\0';
    if (info.max_ext_leaf >= 0x80000004) {
        char raw[49];
        for (uint32_t i = 0; i < 3; i++) {
            cpuid(0x80000002 + i, 0, &a, &b, &c, &d);
            store_regs(raw + 16 * i, a, b, c, d);
        }
        raw[48] = '\0';
        /* Vendors pad the brand string with spaces on either side. */
        const char *s = raw;
        while (*s == ' ')
            s++;
        int n = 0;
        while (s[n])
            n++;
        while (n > 0 && s[n - 1] == ' ')
            n--;
        for (int i = 0; i < n; i++)
            info.brand[i] = s[i];
        info.brand[n] = '\0';
    }
}

static void identify_signature(uint32_t eax)
{
    uint32_t family = (eax >> 8) & 0xf;
    uint32_t model = (eax >> 4) & 0xf;

    /* Extended model counts for families 6 and 15; extended family only for 15. */
    if (family == 6 || family == 15)
        model += ((eax >> 16) & 0xf) << 4;
    if (family == 15)
        family += (eax >> 20) & 0xff;
    info.family = family;
    info.model = model;
    info.stepping = eax & 0xf;
}

static void identify_vmx(void)
{
    /* IA32_FEATURE_CONTROL only exists with VMX: reading it elsewhere raises #GP. */
    uint64_t fc = rdmsr(MSR_IA32_FEATURE_CONTROL);
    info.feature_control = fc;
    info.vmx_usable = !(fc & FEATURE_CONTROL_LOCKED) || (fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX);

    /* The high half of a VMX capability MSR lists the controls allowed to be 1. */
    if (rdmsr(MSR_IA32_VMX_PROCBASED_CTLS) >> 32 & (1u << 31)) {
        uint32_t ctls2 = (uint32_t)(rdmsr(MSR_IA32_VMX_PROCBASED_CTLS2) >> 32);
        info.ept = ctls2 & (1u << 1);
        info.unrestricted_guest = ctls2 & (1u << 7);
    }
}

static void identify_svm(void)
{
    uint32_t a, b, c, d;

    /* SVMDIS can be cleared by us unless firmware also set the lock. */
    uint64_t vm_cr = rdmsr(MSR_VM_CR);
    info.svm_usable = !((vm_cr & VM_CR_SVMDIS) && (vm_cr & VM_CR_LOCK));

    if (info.max_ext_leaf >= 0x8000000a) {
        cpuid(0x8000000a, 0, &a, &b, &c, &d);
        info.npt = d & (1u << 0);
        info.nrips = d & (1u << 3);
        info.svm_asids = b;
    }
}

/*
 * Taipan isolates partitions with second-level paging, so VT-x without EPT or
 * AMD-V without NPT counts as no usable virtualization ("none"); the note
 * says what the CPU does have.
 */
static void choose_backend(void)
{
    if (info.vmx) {
        if (!info.vmx_usable) {
            info.virt = "none";
            info.virt_note = "VT-x disabled by firmware (IA32_FEATURE_CONTROL locked)";
        } else if (!info.ept) {
            info.virt = "none";
            info.virt_note = "VT-x without EPT: no usable hardware virtualization (partitions cannot be isolated)";
        } else if (!info.unrestricted_guest) {
            info.virt = "VT-x+EPT";
            info.virt_note = "VT-x without unrestricted guest: guests must start in protected mode";
        } else {
            info.virt = "VT-x+EPT";
            info.virt_note = "VT-x with EPT and unrestricted guest";
        }
    } else if (info.svm) {
        if (!info.svm_usable) {
            info.virt = "none";
            info.virt_note = "AMD-V disabled by firmware (VM_CR.SVMDIS locked)";
        } else if (!info.npt) {
            info.virt = "none";
            info.virt_note = "AMD-V without NPT: no usable hardware virtualization (partitions cannot be isolated)";
        } else {
            info.virt = "AMD-V+NPT";
            info.virt_note = info.nrips ? "AMD-V with NPT and next-RIP save"
                                        : "AMD-V with NPT, no next-RIP save: the hypervisor decodes instruction lengths";
        }
    } else {
        info.virt = "none";
        info.virt_note = "no VT-x or AMD-V in CPUID: hardware virtualization is not available";
    }
}

void cpu_identify(void)
{
    uint32_t a, b, c, d;

    info = (struct cpu_info){ 0 };
    identify_names();

    cpuid(1, 0, &a, &b, &c, &d);
    identify_signature(a);
    info.hypervisor_present = c & (1u << 31);
    info.vmx = c & (1u << 5);
    if (info.vmx)
        identify_vmx();

    if (info.max_ext_leaf >= 0x80000001) {
        cpuid(0x80000001, 0, &a, &b, &c, &d);
        info.svm = c & (1u << 2);
        if (info.svm)
            identify_svm();
    }
    choose_backend();
}

const struct cpu_info *cpu_info_get(void)
{
    return &info;
}
