/* Identifies the boot CPU and decides which virtualization backend it can run. */
#include "cpu.h"
#include "printk.h"

#define MSR_IA32_FEATURE_CONTROL 0x3a
#define FEATURE_CONTROL_LOCKED (1ull << 0)
#define FEATURE_CONTROL_VMX_OUTSIDE_SMX (1ull << 2)
#define MSR_IA32_VMX_PINBASED_CTLS 0x481
#define MSR_IA32_VMX_PROCBASED_CTLS 0x482
#define MSR_IA32_VMX_EPT_VPID_CAP 0x48c
#define EPT_CAP_1G_PAGES (1ull << 17)
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
        /* The EPT capability MSR exists only when EPT or VPID may be enabled. */
        if (ctls2 & ((1u << 1) | (1u << 5)))
            info.nested_1g = info.ept && (rdmsr(MSR_IA32_VMX_EPT_VPID_CAP) & EPT_CAP_1G_PAGES);
    }
    info.preemption_timer = rdmsr(MSR_IA32_VMX_PINBASED_CTLS) >> 32 & (1u << 6);
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
    /* Nested paging walks guest tables in the host's format: 1 GiB leaves iff the CPU has them. */
    info.nested_1g = info.npt && info.page_1g;
}

/* CPUID 0x40000000 signatures of the hypervisors a person is likely to nest Taipan in. */
static const struct {
    const char *signature, *name;
} hypervisors[] = {
    { "KVMKVMKVM", "KVM" },
    { "Microsoft Hv", "Hyper-V" },
    { "VMwareVMware", "VMware" },
    { "XenVMMXenVMM", "Xen" },
    { "TCGTCGTCGTCG", "QEMU TCG" },
    { "VBoxVBoxVBox", "VirtualBox" },
    { "bhyve bhyve ", "bhyve" },
    { "ACRNACRNACRN", "ACRN" },
    { "TaipanTaipan", "Taipan" },
};

static bool same(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static bool hypervisor_leaf(uint32_t base)
{
    uint32_t a, b, c, d;
    char raw[13];

    cpuid(base, 0, &a, &b, &c, &d);
    store_regs(raw, b, c, d, 0);
    raw[12] = '\0';
    for (unsigned i = 0; i < sizeof(hypervisors) / sizeof(hypervisors[0]); i++) {
        if (same(raw, hypervisors[i].signature)) {
            info.hv_max_leaf = a;
            snprintk(info.hv_vendor_name, sizeof(info.hv_vendor_name), "%s", hypervisors[i].name);
            snprintk(info.hv_signature, sizeof(info.hv_signature), "%s", raw);
            return true;
        }
    }
    if (base == 0x40000000) {
        /* Unknown: keep what is printable, so info can still name it. */
        int n = 0;
        for (int i = 0; i < 12 && raw[i]; i++)
            if (raw[i] >= 0x20 && raw[i] < 0x7f)
                info.hv_signature[n++] = raw[i];
        info.hv_signature[n] = '\0';
        info.hv_max_leaf = a;
    }
    return false;
}

/*
 * The hypervisor bit says we are a guest; leaf 0x40000000 says whose. Xen
 * moves its own leaves to 0x40000100 when it also offers Hyper-V's, so look
 * there too. Some hypervisors (QEMU TCG) set the bit but fill no leaf.
 */
static void identify_hypervisor(void)
{
    if (!info.hypervisor_present)
        return;
    if (!hypervisor_leaf(0x40000000) && !hypervisor_leaf(0x40000100))
        snprintk(info.hv_vendor_name, sizeof(info.hv_vendor_name), "%s",
                 info.hv_signature[0] ? "a hypervisor" : "an unnamed hypervisor");
}

/* What running nested gives a partition and what it takes away, from what the CPU shows. */
static void describe_nesting(void)
{
    if (!info.hypervisor_present)
        return;
    const char *name = info.hv_vendor_name;
    if (info.vmx && info.vmx_usable)
        snprintk(info.nested_note, sizeof(info.nested_note),
                 "%s offers nested VT-x: EPT %s, unrestricted guest %s, preemption timer %s; "
                 "timing follows %s", name, info.ept ? "yes" : "no",
                 info.unrestricted_guest ? "yes" : "no", info.preemption_timer ? "yes" : "no", name);
    else if (info.svm && info.svm_usable)
        snprintk(info.nested_note, sizeof(info.nested_note),
                 "%s offers nested AMD-V: NPT %s, next-RIP save %s, 1 GiB nested pages %s; "
                 "timing follows %s", name, info.npt ? "yes" : "no", info.nrips ? "yes" : "no",
                 info.nested_1g ? "yes" : "no", name);
    else
        snprintk(info.nested_note, sizeof(info.nested_note),
                 "%s offers no nested VT-x or AMD-V: enable nesting on the host (docs/nested.md)", name);
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
        info.page_1g = d & (1u << 26);
        info.svm = c & (1u << 2);
        if (info.svm)
            identify_svm();
    }
    identify_hypervisor();
    choose_backend();
    describe_nesting();
}

const struct cpu_info *cpu_info_get(void)
{
    return &info;
}
