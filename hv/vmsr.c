/* The virtual MSR file: every MSR a vCPU has (build/gen/vmsr_table.h from toolchain/msrs.py), its checks, and #GP for the rest. */
#include "cpu.h"
#include "partition.h"
#include "tsc.h"
#include "vcpu_state.h"
#include "vlapic.h"
#include "vmsr_table.h"

#define EFER_SCE (1ull << 0)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_NXE (1ull << 11)
#define CR0_PG (1ull << 31)

#define APIC_BASE_BSP (1ull << 8)
#define APIC_BASE_EXTD (1ull << 10)
#define APIC_BASE_EN (1ull << 11)
#define MTRR_DEF_TYPE_E (1ull << 11)

#define EXT1_EDX_NX (1u << 20)
#define EXT1_EDX_RDTSCP (1u << 27)
#define LEAF1_ECX_X2APIC (1u << 21)
#define LEAF7_ECX_RDPID (1u << 22)

static const struct vmsr_desc *vmsr_find(uint32_t index)
{
    unsigned lo = 0, hi = VMSR_COUNT;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (vmsr_table[mid].index == index)
            return &vmsr_table[mid];
        if (vmsr_table[mid].index < index)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static bool cpuid_has(uint32_t leaf, uint32_t sub, int reg, uint32_t bit)
{
    uint32_t r[4];
    vcpuid_query(leaf, sub, &r[0], &r[1], &r[2], &r[3]);
    return r[reg] & bit;
}

/* Whether this CPU, as the partition's CPUID describes it, has the MSR at all. */
static const struct vmsr_desc *vmsr_lookup(uint32_t index)
{
    const struct vmsr_desc *m = vmsr_find(index);
    if (!m)
        return NULL;
    if (!(m->vendors & (vcpuid_vendor_amd() ? VMSR_VENDOR_AMD : VMSR_VENDOR_INTEL)))
        return NULL;
    if (m->kind == VMSR_REG && m->reg == VREG_TSC_AUX &&
        !cpuid_has(0x80000001u, 0, 3, EXT1_EDX_RDTSCP) && !cpuid_has(7, 0, 2, LEAF7_ECX_RDPID))
        return NULL;
    return m;
}

static bool canonical(uint64_t a)
{
    return (uint64_t)((int64_t)(a << 16) >> 16) == a;
}

static unsigned phys_bits(void)
{
    uint32_t a, b, c, d;
    vcpuid_query(0x80000000u, 0, &a, &b, &c, &d);
    if (a < 0x80000008u)
        return 36;
    vcpuid_query(0x80000008u, 0, &a, &b, &c, &d);
    return a & 0xff;
}

/* PAT and MTRR memory types: UC 0, WC 1, WT 4, WP 5, WB 6 (and UC- 7 in the PAT only). */
static bool memtype_ok(uint8_t type, bool pat)
{
    return type == 0 || type == 1 || type == 4 || type == 5 || type == 6 || (pat && type == 7);
}

static bool vmsr_efer(struct vcpu *v, const struct vcpu_ops *ops, uint64_t value)
{
    uint64_t allowed = EFER_SCE | EFER_LME | EFER_LMA;
    if (cpuid_has(0x80000001u, 0, 3, EXT1_EDX_NX))
        allowed |= EFER_NXE;
    /* SVME among the rest: the guest's CPUID offers no SVM. */
    if (value & ~allowed)
        return false;
    uint64_t old = ops->reg_get(v, VREG_EFER);
    if ((ops->reg_get(v, VREG_CR0) & CR0_PG) && ((value ^ old) & EFER_LME))
        return false;   /* LME changes only with paging off */
    /* LMA is the CPU's to set: a write leaves it as it is. */
    ops->reg_set(v, VREG_EFER, (value & ~EFER_LMA) | (old & EFER_LMA));
    return true;
}

static bool vmsr_write_reg(struct vcpu *v, const struct vcpu_ops *ops, uint8_t reg, uint64_t value)
{
    switch (reg) {
    case VREG_EFER:
        return vmsr_efer(v, ops, value);
    case VREG_FS_BASE:
    case VREG_GS_BASE:
    case VREG_KERNEL_GS_BASE:
    case VREG_LSTAR:
    case VREG_CSTAR:
    case VREG_SYSENTER_ESP:
    case VREG_SYSENTER_EIP:
        if (!canonical(value))
            return false;
        break;
    case VREG_SFMASK:
    case VREG_TSC_AUX:
        if (value >> 32)
            return false;
        break;
    case VREG_SYSENTER_CS:
        value &= 0xffff;   /* the selector; the rest is ignored */
        break;
    case VREG_PAT:
        for (int i = 0; i < 8; i++)
            if (!memtype_ok((uint8_t)(value >> (i * 8)), true))
                return false;
        break;
    default:
        break;
    }
    ops->reg_set(v, (enum vcpu_reg)reg, value);
    return true;
}

static bool vmsr_apic_base(struct vcpu *v, uint64_t value)
{
    uint64_t writable = APIC_BASE_EN | (((1ull << phys_bits()) - 1) & ~0xfffull);
    if (cpuid_has(1, 0, 2, LEAF1_ECX_X2APIC))
        writable |= APIC_BASE_EXTD;
    uint64_t old = v->msrs.apic_base;
    value = (value & ~APIC_BASE_BSP) | (old & APIC_BASE_BSP);   /* BSP is read-only */
    if (value & ~(writable | APIC_BASE_BSP))
        return false;
    if ((value & APIC_BASE_EXTD) && !(value & APIC_BASE_EN))
        return false;   /* x2APIC on with the APIC off is an invalid state */
    if ((old & APIC_BASE_EXTD) && (value & APIC_BASE_EN) && !(value & APIC_BASE_EXTD))
        return false;   /* x2APIC back to xAPIC only through disabled */
    v->msrs.apic_base = value;
    vlapic_base_changed(v, old, value);
    return true;
}

bool vmsr_read(struct vcpu *v, uint32_t msr, uint64_t *value)
{
    const struct vcpu_ops *ops = partition_backend();
    /* The virtual APIC's own: x2APIC registers and the TSC deadline. */
    if ((msr >= VLAPIC_X2APIC_FIRST && msr <= VLAPIC_X2APIC_LAST) || msr == MSR_TSC_DEADLINE)
        return vlapic_msr_read(v, msr, value);
    const struct vmsr_desc *m = vmsr_lookup(msr);
    if (!m)
        return false;
    switch (m->kind) {
    case VMSR_REG: {
        uint64_t x = ops->reg_get(v, (enum vcpu_reg)m->reg);
        *value = x;
        return true;
    }
    case VMSR_TSC:
        *value = tsc_read() + ops->reg_get(v, VREG_TSC_OFFSET);
        return true;
    case VMSR_TSC_ADJUST:
        *value = v->msrs.tsc_adjust;
        return true;
    case VMSR_APIC_BASE:
        *value = v->msrs.apic_base;
        return true;
    case VMSR_MTRR_DEF_TYPE:
        *value = v->msrs.mtrr_def_type;
        return true;
    case VMSR_PLATFORM_INFO: {
        uint64_t ratio = tsc_khz() / 100000;   /* the TSC's rate in 100 MHz units */
        *value = (ratio > 0xff ? 0xff : ratio) << 8;
        return true;
    }
    case VMSR_CONST:
    case VMSR_ZERO_WRITABLE:
    case VMSR_ZERO_ONLY:
    default:
        *value = m->reset;
        return true;
    }
}

bool vmsr_write(struct vcpu *v, uint32_t msr, uint64_t value)
{
    const struct vcpu_ops *ops = partition_backend();
    if ((msr >= VLAPIC_X2APIC_FIRST && msr <= VLAPIC_X2APIC_LAST) || msr == MSR_TSC_DEADLINE)
        return vlapic_msr_write(v, msr, value);
    const struct vmsr_desc *m = vmsr_lookup(msr);
    if (!m)
        return false;
    switch (m->kind) {
    case VMSR_REG:
        return vmsr_write_reg(v, ops, m->reg, value);
    case VMSR_TSC: {
        /* The guest's TSC becomes value now; TSC_ADJUST moves by as much (SDM vol. 3B, 18.17.3). */
        uint64_t now = tsc_read();
        uint64_t old = now + ops->reg_get(v, VREG_TSC_OFFSET);
        ops->reg_set(v, VREG_TSC_OFFSET, value - now);
        v->msrs.tsc_adjust += value - old;
        return true;
    }
    case VMSR_TSC_ADJUST:
        ops->reg_set(v, VREG_TSC_OFFSET, ops->reg_get(v, VREG_TSC_OFFSET) + (value - v->msrs.tsc_adjust));
        v->msrs.tsc_adjust = value;
        return true;
    case VMSR_APIC_BASE:
        return vmsr_apic_base(v, value);
    case VMSR_MTRR_DEF_TYPE:
        /* E and the default type; FE is reserved without fixed ranges (MTRRcap.FIX = 0). */
        if ((value & ~(MTRR_DEF_TYPE_E | 0xffull)) || !memtype_ok((uint8_t)value, false))
            return false;
        v->msrs.mtrr_def_type = value;
        return true;
    case VMSR_ZERO_WRITABLE:
        return true;
    case VMSR_ZERO_ONLY:
        return value == 0;
    case VMSR_CONST:
    case VMSR_PLATFORM_INFO:
    default:
        return false;
    }
}

void vmsr_reset(struct vcpu *v)
{
    const struct vcpu_ops *ops = partition_backend();
    v->msrs = (struct vcpu_msrs){ 0 };
    for (unsigned i = 0; i < VMSR_COUNT; i++) {
        const struct vmsr_desc *m = &vmsr_table[i];
        if (m->kind == VMSR_REG && m->reg != VREG_EFER)
            ops->reg_set(v, (enum vcpu_reg)m->reg, m->reset);
        else if (m->kind == VMSR_APIC_BASE)
            v->msrs.apic_base = m->reset;
        else if (m->kind == VMSR_MTRR_DEF_TYPE)
            v->msrs.mtrr_def_type = m->reset;
    }
    ops->reg_set(v, VREG_TSC_OFFSET, 0);
    vlapic_reset(v);
}
