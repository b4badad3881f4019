/* Control-register and XCR0 writes as the manuals define them: reserved bits, mode checks, and the IA-32e mode switch. */
#include "cpu.h"
#include "partition.h"
#include "vcpu_state.h"

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_EM (1ull << 2)
#define CR0_TS (1ull << 3)
#define CR0_ET (1ull << 4)
#define CR0_NE (1ull << 5)
#define CR0_WP (1ull << 16)
#define CR0_AM (1ull << 18)
#define CR0_NW (1ull << 29)
#define CR0_CD (1ull << 30)
#define CR0_PG (1ull << 31)
/* The bits CR0 has; others in 31:0 are ignored on write (and read as 0), 63:32 raise #GP. */
#define CR0_DEFINED (CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_NW | CR0_CD | CR0_PG)

#define CR4_VME (1ull << 0)
#define CR4_PVI (1ull << 1)
#define CR4_TSD (1ull << 2)
#define CR4_DE (1ull << 3)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define CR4_MCE (1ull << 6)
#define CR4_PGE (1ull << 7)
#define CR4_PCE (1ull << 8)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define CR4_UMIP (1ull << 11)
#define CR4_LA57 (1ull << 12)
#define CR4_FSGSBASE (1ull << 16)
#define CR4_PCIDE (1ull << 17)
#define CR4_OSXSAVE (1ull << 18)
#define CR4_SMEP (1ull << 20)
#define CR4_SMAP (1ull << 21)
#define CR4_PKE (1ull << 22)

#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

#define XCR0_X87 (1ull << 0)
#define XCR0_SSE (1ull << 1)
#define XCR0_AVX (1ull << 2)
#define XCR0_BNDREGS (1ull << 3)
#define XCR0_BNDCSR (1ull << 4)
#define XCR0_AVX512 (7ull << 5)

struct cpuid_bit {
    uint32_t leaf, sub;
    uint8_t reg;    /* 1 EBX, 2 ECX, 3 EDX */
    uint8_t bit;
    uint64_t cr4;
};

/* CR4 bits that exist only where CPUID offers their feature (SDM vol. 3A, 2.5). */
static const struct cpuid_bit cr4_features[] = {
    { 1, 0, 3, 1, CR4_VME | CR4_PVI }, { 1, 0, 3, 2, CR4_DE }, { 1, 0, 3, 3, CR4_PSE },
    { 1, 0, 3, 6, CR4_PAE }, { 1, 0, 3, 7, CR4_MCE }, { 1, 0, 3, 13, CR4_PGE },
    { 1, 0, 3, 24, CR4_OSFXSR | CR4_OSXMMEXCPT }, { 1, 0, 2, 17, CR4_PCIDE }, { 1, 0, 2, 26, CR4_OSXSAVE },
    { 7, 0, 1, 0, CR4_FSGSBASE }, { 7, 0, 1, 7, CR4_SMEP }, { 7, 0, 1, 20, CR4_SMAP },
    { 7, 0, 2, 2, CR4_UMIP }, { 7, 0, 2, 3, CR4_PKE }, { 7, 0, 2, 16, CR4_LA57 },
};

static uint64_t cr4_supported;
static bool cr4_known;

uint64_t vcr_cr4_supported(void)
{
    if (cr4_known)
        return cr4_supported;
    uint64_t bits = CR4_TSD | CR4_PCE;   /* no CPUID bit guards these */
    for (unsigned i = 0; i < sizeof(cr4_features) / sizeof(cr4_features[0]); i++) {
        const struct cpuid_bit *f = &cr4_features[i];
        uint32_t r[4];
        vcpuid_query(f->leaf, f->sub, &r[0], &r[1], &r[2], &r[3]);
        if (f->leaf == 7) {
            uint32_t max_a, x;
            vcpuid_query(0, 0, &max_a, &x, &x, &x);
            if (max_a < 7)
                continue;
        }
        if (r[f->reg] & (1u << f->bit))
            bits |= f->cr4;
    }
    cr4_supported = bits;
    cr4_known = true;
    return bits;
}

static bool vcr_cr0(struct vcpu *v, const struct vcpu_ops *ops, uint64_t value)
{
    if (value >> 32)
        return false;
    value = (value & CR0_DEFINED) | CR0_ET;   /* ET is hard-wired to 1 */
    if ((value & CR0_PG) && !(value & CR0_PE))
        return false;
    if ((value & CR0_NW) && !(value & CR0_CD))
        return false;
    uint64_t old = ops->reg_get(v, VREG_CR0);
    uint64_t efer = ops->reg_get(v, VREG_EFER);
    uint64_t cr4 = ops->reg_get(v, VREG_CR4);
    uint64_t new_efer = efer;
    if ((value & CR0_PG) && !(old & CR0_PG) && (efer & EFER_LME)) {
        /* Paging on with LME: IA-32e mode becomes active, which needs PAE. */
        if (!(cr4 & CR4_PAE))
            return false;
        new_efer |= EFER_LMA;
    } else if (!(value & CR0_PG) && (old & CR0_PG) && (efer & EFER_LMA)) {
        /* Paging off leaves IA-32e mode; only from compatibility mode, never from 64-bit code. */
        if (cr4 & CR4_PCIDE)
            return false;
        new_efer &= ~EFER_LMA;
    }
    if (new_efer != efer)
        ops->reg_set(v, VREG_EFER, new_efer);
    ops->reg_set(v, VREG_CR0, value);
    return true;
}

static bool vcr_cr4(struct vcpu *v, const struct vcpu_ops *ops, uint64_t value)
{
    if (value & ~vcr_cr4_supported())
        return false;   /* reserved, VMXE/SMXE, or a feature this partition's CPUID lacks */
    uint64_t old = ops->reg_get(v, VREG_CR4);
    bool lma = ops->reg_get(v, VREG_EFER) & EFER_LMA;
    if (lma && !(value & CR4_PAE))
        return false;
    if (lma && ((value ^ old) & CR4_LA57))
        return false;
    if ((value & CR4_PCIDE) && !(old & CR4_PCIDE) && (!lma || (ops->reg_get(v, VREG_CR3) & 0xfff)))
        return false;
    ops->reg_set(v, VREG_CR4, value);
    return true;
}

bool vcr_write(struct vcpu *v, unsigned cr, uint64_t value)
{
    const struct vcpu_ops *ops = partition_backend();
    switch (cr) {
    case 0:
        return vcr_cr0(v, ops, value);
    case 3:
        ops->reg_set(v, VREG_CR3, value);
        return true;
    case 4:
        return vcr_cr4(v, ops, value);
    case 8:
        /* CR8 is TPR[7:4] (SDM vol. 3A, 11.8.6); bits 63:4 are reserved. */
        if (value >> 4)
            return false;
        v->lapic.tpr = (uint32_t)value << 4;
        return true;
    default:
        return false;
    }
}

uint64_t vcr_read(const struct vcpu *v, unsigned cr)
{
    return cr == 8 ? (v->lapic.tpr >> 4) & 0xf : 0;
}

bool vcr_xsetbv(struct vcpu *v, uint32_t index, uint64_t value)
{
    const struct vcpu_ops *ops = partition_backend();
    /* SDM vol. 2, XSETBV: #GP at CPL > 0, for an XCR other than 0, for a
     * bit the CPU does not offer, without x87, AVX without SSE, AVX-512
     * not whole or without AVX, and the two MPX components apart. */
    if (ops->reg_get(v, VREG_CPL) != 0 || index != 0)
        return false;
    if ((value & ~vfpu_xcr0_allowed()) || !(value & XCR0_X87))
        return false;
    if ((value & XCR0_AVX) && !(value & XCR0_SSE))
        return false;
    if ((value & XCR0_AVX512) && ((value & XCR0_AVX512) != XCR0_AVX512 || !(value & XCR0_AVX)))
        return false;
    if (!!(value & XCR0_BNDREGS) != !!(value & XCR0_BNDCSR))
        return false;
    v->fpu.xcr0 = value;
    return true;
}
