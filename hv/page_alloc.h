/* Physical page allocator: 4 KiB pages below 4 GiB, 2 MiB chunks above (big machines), named owners. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "multiboot.h"

#define PAGE_SIZE 4096ull
#define HIGH_CHUNK_SIZE (2ull << 20)   /* the unit of RAM above 4 GiB: partitions are 2 MiB aligned */
#define PAGE_OWNERS_MAX 128   /* boot, 5 per CPU, 2 per partition, the heap */
#define PAGE_OWNER_NAME_SIZE 24

struct page_stats {
    uint64_t total_pages;      /* usable RAM pages the allocator manages, in 4 KiB pages */
    uint64_t free_pages;
    uint64_t reserved_pages;   /* total - free: boot reservations and allocations */
    uint64_t high_pages;       /* of total, the RAM above 4 GiB (whole 2 MiB chunks) */
    uint64_t high_free_pages;
    uint64_t top;              /* end of the highest usable RAM the allocator manages */
};

/* A named hold on memory, so the console can say what uses RAM. */
struct page_owner {
    char name[PAGE_OWNER_NAME_SIZE];
    uint64_t addr;
    uint64_t npages;
};

void page_alloc_init(const struct boot_info *bi);
/* Contiguous pages below 4 GiB; the physical (= virtual) address, or 0 when none fit. */
uint64_t page_alloc(size_t npages);
uint64_t page_alloc_named(const char *owner, size_t npages);
/* Frees pages; a named record with exactly this address and size is dropped too. */
void page_free(uint64_t addr, size_t npages);
/*
 * Takes pages out of circulation (addr rounded down, end up); false if the
 * name table is full. Above 4 GiB whole 2 MiB chunks are taken.
 */
bool page_reserve_named(const char *owner, uint64_t addr, size_t npages);
void page_alloc_stats(struct page_stats *out);
/* Whether [addr, addr + size) is usable RAM the allocator manages and nobody holds. */
bool page_range_free(uint64_t addr, uint64_t size);
/* Owners in the order recorded: index 0, 1, ... until NULL. */
const struct page_owner *page_owner_at(size_t index);
