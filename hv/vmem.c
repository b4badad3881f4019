/* Guest memory as the guest addresses it: linear addresses through the guest's own page tables, bounded by its partition. */
#include "libc.h"
#include "partition.h"
#include "vcpu_state.h"

#define CR0_PG (1ull << 31)
#define CR4_PSE (1ull << 4)
#define CR4_PAE (1ull << 5)
#define EFER_LMA (1ull << 10)
#define PTE_P 1ull
#define PTE_PS (1ull << 7)
#define ADDR_MASK 0x000ffffffffff000ull

/* A pointer to guest-physical [gpa, gpa + len) when it lies inside the partition, else NULL. */
static const uint8_t *vmem_host(const struct vcpu *v, uint64_t gpa, uint64_t len)
{
    const struct pt_partition *d = v->part->desc;
    if (gpa >= d->mem_size || len > d->mem_size - gpa)
        return NULL;
    return (const uint8_t *)(uintptr_t)(d->mem_host_base + gpa);
}

static bool vmem_entry(const struct vcpu *v, uint64_t gpa, bool wide, uint64_t *out)
{
    const uint8_t *p = vmem_host(v, gpa, wide ? 8 : 4);
    if (!p)
        return false;
    if (wide) {
        memcpy(out, p, 8);
    } else {
        uint32_t e;
        memcpy(&e, p, 4);
        *out = e;
    }
    return (*out & PTE_P) != 0;
}

/* SDM vol. 3A, 4.3-4.5: 32-bit, PAE and 4-level paging; false when the walk ends in a not-present entry. */
bool vmem_translate(struct vcpu *v, uint64_t linear, uint64_t *gpa)
{
    const struct vcpu_ops *ops = partition_backend();
    uint64_t cr0 = ops->reg_get(v, VREG_CR0), cr3 = ops->reg_get(v, VREG_CR3);
    uint64_t cr4 = ops->reg_get(v, VREG_CR4), efer = ops->reg_get(v, VREG_EFER);
    uint64_t e;
    if (!(cr0 & CR0_PG)) {
        *gpa = linear;
        return true;
    }
    if (!(cr4 & CR4_PAE)) {
        linear &= 0xffffffffull;
        if (!vmem_entry(v, (cr3 & 0xfffff000ull) + ((linear >> 22) & 0x3ff) * 4, false, &e))
            return false;
        if ((e & PTE_PS) && (cr4 & CR4_PSE)) {
            *gpa = (e & 0xffc00000ull) | (linear & 0x3fffff);
            return true;
        }
        if (!vmem_entry(v, (e & 0xfffff000ull) + ((linear >> 12) & 0x3ff) * 4, false, &e))
            return false;
        *gpa = (e & 0xfffff000ull) | (linear & 0xfff);
        return true;
    }
    int levels = (efer & EFER_LMA) ? 4 : 3;
    uint64_t table = (efer & EFER_LMA) ? cr3 & ADDR_MASK : cr3 & 0xffffffe0ull;
    if (levels == 3) {
        linear &= 0xffffffffull;
        if (!vmem_entry(v, table + ((linear >> 30) & 3) * 8, true, &e))
            return false;
        table = e & ADDR_MASK;
        levels = 2;
    }
    for (int level = levels; level >= 1; level--) {
        unsigned shift = 12 + 9 * (unsigned)(level - 1);
        if (!vmem_entry(v, table + ((linear >> shift) & 0x1ff) * 8, true, &e))
            return false;
        if (level == 1 || ((e & PTE_PS) && level <= 3)) {
            uint64_t page = (1ull << shift) - 1;
            *gpa = (e & ADDR_MASK & ~page) | (linear & page);
            return true;
        }
        table = e & ADDR_MASK;
    }
    return false;
}

static uint32_t vmem_copy(struct vcpu *v, uint64_t linear, uint8_t *buf, uint32_t len, bool store)
{
    uint32_t done = 0;
    while (done < len) {
        uint64_t gpa;
        if (!vmem_translate(v, linear + done, &gpa))
            break;
        uint32_t chunk = 0x1000 - (uint32_t)((linear + done) & 0xfff);
        if (chunk > len - done)
            chunk = len - done;
        uint8_t *p = (uint8_t *)vmem_host(v, gpa, chunk);
        if (!p)
            break;
        if (store)
            memcpy(p, buf + done, chunk);
        else
            memcpy(buf + done, p, chunk);
        done += chunk;
    }
    return done;
}

uint32_t vmem_fetch(struct vcpu *v, uint64_t linear, uint8_t *buf, uint32_t len)
{
    return vmem_copy(v, linear, buf, len, false);
}

uint32_t vmem_store(struct vcpu *v, uint64_t linear, const uint8_t *buf, uint32_t len)
{
    return vmem_copy(v, linear, (uint8_t *)buf, len, true);
}
