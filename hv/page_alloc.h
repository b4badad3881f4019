/* Physical page allocator for the identity-mapped RAM below 4 GiB, with named owners. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "multiboot.h"

#define PAGE_SIZE 4096ull
#define PAGE_OWNERS_MAX 128   /* boot, 5 per CPU, 2 per partition, the heap */
#define PAGE_OWNER_NAME_SIZE 24

struct page_stats {
    uint64_t total_pages;      /* usable RAM pages the allocator manages */
    uint64_t free_pages;
    uint64_t reserved_pages;   /* total - free: boot reservations and allocations */
};

/* A named hold on memory, so the console can say what uses RAM. */
struct page_owner {
    char name[PAGE_OWNER_NAME_SIZE];
    uint64_t addr;
    uint64_t npages;
};

void page_alloc_init(const struct boot_info *bi);
/* Contiguous pages; the physical (= virtual) address, or 0 when none fit. */
uint64_t page_alloc(size_t npages);
uint64_t page_alloc_named(const char *owner, size_t npages);
/* Frees pages; a named record with exactly this address and size is dropped too. */
void page_free(uint64_t addr, size_t npages);
/* Takes pages out of circulation (addr rounded down, end up); false if the name table is full. */
bool page_reserve_named(const char *owner, uint64_t addr, size_t npages);
void page_alloc_stats(struct page_stats *out);
/* Owners in the order recorded: index 0, 1, ... until NULL. */
const struct page_owner *page_owner_at(size_t index);
