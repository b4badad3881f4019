/* CPU identification and the privileged register accessors the rest of the hypervisor uses. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

static inline void cpuid(uint32_t leaf, uint32_t subleaf, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(subleaf));
}

static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}

static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)));
}

#define CPU_READ_CR(n)                                      \
    static inline uint64_t read_cr##n(void)                 \
    {                                                       \
        uint64_t v;                                         \
        __asm__ volatile("mov %%cr" #n ", %0" : "=r"(v));   \
        return v;                                           \
    }
CPU_READ_CR(0)
CPU_READ_CR(2)
CPU_READ_CR(3)
CPU_READ_CR(4)
#undef CPU_READ_CR

static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

/* Stops this CPU for good; interrupts off so nothing wakes it. */
static inline _Noreturn void cpu_halt(void)
{
    for (;;)
        __asm__ volatile("cli; hlt");
}

struct cpu_info {
    char vendor[13];
    char brand[49];
    uint32_t family, model, stepping;
    uint32_t max_leaf, max_ext_leaf;
    bool hypervisor_present;   /* we are ourselves a guest (CPUID.1:ECX[31]) */
    char hv_signature[13];     /* CPUID 0x40000000 EBX:ECX:EDX, e.g. "KVMKVMKVM" (printable only) */
    char hv_vendor_name[16];   /* "KVM", "Hyper-V", "VMware", "Xen", ... or "" when bare metal */
    uint32_t hv_max_leaf;      /* CPUID 0x40000000 EAX: the hypervisor's highest leaf */
    char nested_note[160];     /* under a hypervisor: what nesting gives and does not give */
    bool page_1g;              /* 1 GiB pages in the host's own page tables (CPUID pdpe1gb) */
    bool nested_1g;            /* 1 GiB leaves in EPT (VMX EPT cap bit 17) or NPT (pdpe1gb) */
    bool preemption_timer;     /* VMX preemption timer (pin-based control bit 6) */

    bool vmx;                  /* CPUID reports VMX */
    bool vmx_usable;           /* and firmware has not locked it off */
    uint64_t feature_control;  /* IA32_FEATURE_CONTROL as read (0 when there is no VMX) */
    bool ept;
    bool unrestricted_guest;

    bool svm;                  /* CPUID reports SVM */
    bool svm_usable;           /* and firmware has not locked it off */
    bool npt;
    bool nrips;
    uint32_t svm_asids;

    const char *virt;          /* "VT-x+EPT", "AMD-V+NPT" or "none" (not usable by Taipan) */
    const char *virt_note;     /* one sentence saying why */
};

void cpu_identify(void);
const struct cpu_info *cpu_info_get(void);
