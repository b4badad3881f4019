/* CPUID as a partition sees it: the host's, filtered, with the bits that follow the vCPU's own CR4, XCR0 and APIC_BASE. */
#include "cpu.h"
#include "libc.h"
#include "partition.h"
#include "tsc.h"
#include "vcpu_state.h"
#include "vcpuid_table.h"

/* CPUID: the hypervisor leaves Taipan answers itself. */
#define CPUID_HV_BASE 0x40000000u
#define CPUID_HV_ABI 0x40000001u
/* The timing leaf as VMware defined it and other hypervisors copied: EAX the TSC's kHz. */
#define CPUID_HV_TIMING 0x40000010u
#define HYPERCALL_ABI_VERSION 1u

#define LEAF1_ECX_X2APIC (1u << 21)
#define LEAF1_ECX_TSC_DEADLINE (1u << 24)
#define LEAF1_ECX_XSAVE (1u << 26)
#define LEAF1_ECX_OSXSAVE (1u << 27)
#define LEAF1_ECX_HYPERVISOR (1u << 31)
#define LEAF1_EDX_APIC (1u << 9)
#define LEAF7_ECX_PKU (1u << 3)
#define LEAF7_ECX_OSPKE (1u << 4)
#define LEAFD1_EAX_XSAVES (1u << 3)
#define LEAFD1_EAX_XFD (1u << 4)

#define CR4_OSXSAVE (1ull << 18)
#define CR4_PKE (1ull << 22)
#define APIC_BASE_EN (1ull << 11)

bool vcpuid_vendor_amd(void)
{
    return memcmp(cpu_info_get()->vendor, "AuthenticAMD", 12) == 0;
}

void vcpuid_query(uint32_t leaf, uint32_t sub, uint32_t *a, uint32_t *b, uint32_t *c, uint32_t *d)
{
    cpuid(leaf, sub, a, b, c, d);
    /* What the vCPU does not have (toolchain/cpuid.py says why, bit by bit). */
    uint32_t *regs[4] = { a, b, c, d };
    for (unsigned i = 0; i < VCPUID_HIDDEN_COUNT; i++) {
        const struct vcpuid_hidden *h = &vcpuid_hidden[i];
        if (h->leaf == leaf && (h->subleaf == VCPUID_ANY_SUBLEAF || h->subleaf == sub))
            *regs[h->reg] &= ~h->bits;
    }
    if (leaf == 1) {
        /* Tell the guest a hypervisor is present. */
        *c |= LEAF1_ECX_HYPERVISOR;
        /* One vCPU per partition: its initial APIC ID is 0. */
        *b &= 0x00ffffffu;
        /* The local APIC is all virtual (hv/vlapic.c): x2APIC and the
         * TSC-deadline timer whatever the host has. */
        *c |= LEAF1_ECX_X2APIC | LEAF1_ECX_TSC_DEADLINE;
    } else if (leaf == 0xb || leaf == 0x1f) {
        /* The topology leaves name the x2APIC ID in EDX: the vCPU's (0), not the host CPU's. */
        *d = 0;
    } else if (leaf == 0x8000001eu) {
        *a = 0;   /* AMD's extended APIC ID, likewise */
    } else if (leaf == 0xd) {
        uint64_t allowed = vfpu_xcr0_allowed();
        if (sub == 0) {
            *a &= (uint32_t)allowed;
            *d &= (uint32_t)(allowed >> 32);
            *c = vfpu_area_size(allowed);
        } else if (sub == 1) {
            /* No IA32_XSS for the guest, so no XSAVES; no XFD (no AMX). */
            *a &= ~(LEAFD1_EAX_XSAVES | LEAFD1_EAX_XFD);
            *c = *d = 0;
        } else if (sub < 63 && !(allowed & (1ull << sub))) {
            *a = *b = *c = *d = 0;
        }
    }
}

void vcpuid_emulate(struct vcpu *v)
{
    struct guest_regs *r = &v->regs;
    const struct vcpu_ops *ops = partition_backend();
    uint32_t leaf = (uint32_t)r->rax, sub = (uint32_t)r->rcx;
    uint32_t a, b, c, d;
    if (leaf == CPUID_HV_BASE) {
        /* "TaipanTaipan" in EBX, ECX, EDX, as KVM and Xen put their names. */
        a = CPUID_HV_TIMING;
        memcpy(&b, "Taip", 4);
        memcpy(&c, "anTa", 4);
        memcpy(&d, "ipan", 4);
    } else if (leaf == CPUID_HV_ABI) {
        a = HYPERCALL_ABI_VERSION;
        b = c = d = 0;
    } else if (leaf == CPUID_HV_TIMING) {
        a = (uint32_t)tsc_khz();
        b = c = d = 0;
    } else if (leaf > CPUID_HV_ABI && leaf < CPUID_HV_TIMING) {
        a = b = c = d = 0;   /* reserved hypervisor leaves: nothing of the host's shows */
    } else {
        vcpuid_query(leaf, sub, &a, &b, &c, &d);
        uint64_t cr4 = ops->reg_get(v, VREG_CR4);
        if (leaf == 1) {
            /* The OS's own enables, not the host's. */
            c &= ~LEAF1_ECX_OSXSAVE;
            if ((c & LEAF1_ECX_XSAVE) && (cr4 & CR4_OSXSAVE))
                c |= LEAF1_ECX_OSXSAVE;
            d &= ~LEAF1_EDX_APIC;
            if (v->msrs.apic_base & APIC_BASE_EN)
                d |= LEAF1_EDX_APIC;
        } else if (leaf == 7 && sub == 0) {
            c &= ~LEAF7_ECX_OSPKE;
            if ((c & LEAF7_ECX_PKU) && (cr4 & CR4_PKE))
                c |= LEAF7_ECX_OSPKE;
        } else if (leaf == 0xd && sub == 0) {
            b = vfpu_area_size(v->fpu.xcr0);   /* for the components XCR0 enables now */
        } else if (leaf == 0xd && sub == 1) {
            b = vfpu_compacted_size(v->fpu.xcr0);
        }
    }
    r->rax = a;
    r->rbx = b;
    r->rcx = c;
    r->rdx = d;
}
