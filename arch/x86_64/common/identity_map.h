/* The identity map of RAM above 4 GiB, added to the boot page tables once the memory map is known. */
#pragma once
#include <stdint.h>

struct identity_map_stats {
    uint64_t top;           /* everything below this that is usable RAM is mapped */
    uint32_t pages_1g;      /* PDPT entries mapping 1 GiB each */
    uint32_t pages_2m;      /* PD entries mapping 2 MiB each (where 1 GiB pages don't fit or exist) */
    uint32_t directories;   /* page directories allocated for them */
};

/* Maps every usable 2 MiB of RAM in [4 GiB, LAYOUT_HIGH_MEMORY_TOP) one to one, write-back. */
void identity_map_high(void);
const struct identity_map_stats *identity_map_get(void);
