/* Extends the boot identity map above 4 GiB: usable RAM only, 1 GiB pages where alignment and the CPU allow. */
#include "cpu.h"
#include "identity_map.h"
#include "layout.h"
#include "libc.h"
#include "multiboot.h"
#include "page_alloc.h"
#include "printk.h"

/* Long-mode paging entries (Intel SDM vol. 3, 4.5): present, writable, and PS for a large page. */
#define PTE_PRESENT (1ull << 0)
#define PTE_WRITABLE (1ull << 1)
#define PTE_LARGE (1ull << 7)
#define GIB (1ull << 30)
#define MIB2 (2ull << 20)
#define ENTRIES 512

static struct identity_map_stats stats;

static bool usable(uint64_t base, uint64_t size)
{
    /* A range counts only if one usable region holds it and no other region claims part of it. */
    const struct boot_info *bi = boot_info_get();
    bool inside = false;
    for (uint32_t i = 0; i < bi->region_count; i++) {
        const struct boot_region *r = &bi->regions[i];
        bool overlaps = base < r->base + r->length && r->base < base + size;
        if (r->type == BOOT_REGION_USABLE && base >= r->base && base + size <= r->base + r->length)
            inside = true;
        else if (r->type != BOOT_REGION_USABLE && overlaps)
            return false;
    }
    return inside;
}

/* One GiB slot of the PDPT: a 1 GiB page, a directory of 2 MiB pages, or nothing when it holds no RAM. */
static void map_slot(uint64_t *pdpt, uint64_t slot, bool page_1g)
{
    uint64_t base = slot * GIB;
    if (page_1g && usable(base, GIB)) {
        pdpt[slot] = base | PTE_PRESENT | PTE_WRITABLE | PTE_LARGE;
        stats.pages_1g++;
        stats.top = base + GIB;
        return;
    }
    uint64_t *pd = NULL;
    for (uint64_t i = 0; i < ENTRIES; i++) {
        uint64_t addr = base + i * MIB2;
        if (!usable(addr, MIB2))
            continue;
        if (!pd) {
            uint64_t page = page_alloc_named("high page tables", 1);
            if (!page) {
                printk("taipan: no page for the identity map at 0x%llx: RAM there stays unmapped\n",
                       (unsigned long long)base);
                return;
            }
            pd = (uint64_t *)(uintptr_t)page;
            memset(pd, 0, PAGE_SIZE);
            stats.directories++;
        }
        pd[i] = addr | PTE_PRESENT | PTE_WRITABLE | PTE_LARGE;
        stats.pages_2m++;
        stats.top = addr + MIB2;
    }
    if (pd)
        pdpt[slot] = (uint64_t)(uintptr_t)pd | PTE_PRESENT | PTE_WRITABLE;
}

void identity_map_high(void)
{
    /*
     * PML4 entry 0 covers 512 GiB through the boot PDPT, whose first four
     * entries the stub filled (the low 4 GiB). Only RAM is mapped: write-back
     * mappings of MMIO (a 64-bit BAR up here) could be prefetched into.
     */
    uint64_t *pdpt = (uint64_t *)(uintptr_t)LAYOUT_BOOT_PDPT;
    bool page_1g = cpu_info_get()->page_1g;
    stats = (struct identity_map_stats){ .top = LAYOUT_IDENTITY_MAP_BYTES };
    for (uint64_t slot = LAYOUT_IDENTITY_MAP_BYTES / GIB; slot < LAYOUT_HIGH_MEMORY_TOP / GIB; slot++)
        map_slot(pdpt, slot, page_1g);
    /* The entries were not present before, but reload CR3 so no walk cached them as such. */
    __asm__ volatile("mov %%cr3, %%rax; mov %%rax, %%cr3" ::: "rax", "memory");
    if (stats.pages_1g || stats.pages_2m)
        printk("taipan: RAM above 4 GiB mapped up to 0x%llx: %u 1 GiB pages, %u 2 MiB pages\n",
               (unsigned long long)stats.top, stats.pages_1g, stats.pages_2m);
}

const struct identity_map_stats *identity_map_get(void)
{
    return &stats;
}
