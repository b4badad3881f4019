/* Bitmap allocator of 4 KiB physical pages below 4 GiB and 2 MiB chunks above, and who holds them. */
#include "layout.h"
#include "libc.h"
#include "page_alloc.h"
#include "printk.h"

/* Only what the boot page tables identity-map can be handed out as a pointer. */
#define PAGE_LIMIT (LAYOUT_IDENTITY_MAP_BYTES / PAGE_SIZE)
#define WORDS (PAGE_LIMIT / 64)
/*
 * Above 4 GiB only partitions live (placed by the toolchain, reserved here by
 * name), so 2 MiB chunks are fine enough and keep the maps small: 512 GiB is
 * 256 Ki chunks, 32 KiB per map.
 */
#define HIGH_BASE LAYOUT_IDENTITY_MAP_BYTES
#define HIGH_CHUNKS ((LAYOUT_HIGH_MEMORY_TOP - HIGH_BASE) / HIGH_CHUNK_SIZE)
#define HIGH_WORDS (HIGH_CHUNKS / 64)
#define CHUNK_PAGES (HIGH_CHUNK_SIZE / PAGE_SIZE)

extern char __image_start[], __image_end[];

/*
 * Two maps: "ram" says a page is usable RAM at all, "used" that it is taken.
 * Keeping ram separate means a stray page_free on MMIO or firmware memory can
 * never make that page allocatable.
 */
static uint64_t ram_map[WORDS];
static uint64_t used_map[WORDS];
static uint64_t high_ram_map[HIGH_WORDS];
static uint64_t high_used_map[HIGH_WORDS];
static uint64_t total_pages, free_pages;
static uint64_t high_chunks, high_free_chunks, ram_top;
static struct page_owner owners[PAGE_OWNERS_MAX];
static size_t owner_count;

static bool bit_get(const uint64_t *map, uint64_t page)
{
    return map[page / 64] >> (page % 64) & 1;
}

static void bit_set(uint64_t *map, uint64_t page, bool on)
{
    if (on)
        map[page / 64] |= 1ull << (page % 64);
    else
        map[page / 64] &= ~(1ull << (page % 64));
}

static void page_take(uint64_t page)
{
    if (!bit_get(used_map, page)) {
        bit_set(used_map, page, true);
        free_pages--;
    }
}

static void page_give(uint64_t page)
{
    if (bit_get(ram_map, page) && bit_get(used_map, page)) {
        bit_set(used_map, page, false);
        free_pages++;
    }
}

/* Marks [first, end) of a byte range in the ram map; clipped to what is mapped. */
static void ram_mark(uint64_t base, uint64_t length, bool usable)
{
    if (base >= LAYOUT_IDENTITY_MAP_BYTES)
        return;
    uint64_t end = length > LAYOUT_IDENTITY_MAP_BYTES - base ? LAYOUT_IDENTITY_MAP_BYTES : base + length;
    /* Usable RAM shrinks inward to whole pages, anything else grows outward. */
    uint64_t first = usable ? (base + PAGE_SIZE - 1) / PAGE_SIZE : base / PAGE_SIZE;
    uint64_t last = usable ? end / PAGE_SIZE : (end + PAGE_SIZE - 1) / PAGE_SIZE;
    for (uint64_t p = first; p < last; p++)
        bit_set(ram_map, p, usable);
}

/* Whole 2 MiB chunks of [base, base + length) above 4 GiB: usable RAM shrinks inward, the rest grows. */
static void high_mark(uint64_t base, uint64_t length, bool usable)
{
    uint64_t end = base + length < base ? LAYOUT_HIGH_MEMORY_TOP : base + length;
    if (end <= HIGH_BASE || base >= LAYOUT_HIGH_MEMORY_TOP)
        return;
    if (base < HIGH_BASE)
        base = HIGH_BASE;
    if (end > LAYOUT_HIGH_MEMORY_TOP)
        end = LAYOUT_HIGH_MEMORY_TOP;
    uint64_t first = usable ? (base - HIGH_BASE + HIGH_CHUNK_SIZE - 1) / HIGH_CHUNK_SIZE
                            : (base - HIGH_BASE) / HIGH_CHUNK_SIZE;
    uint64_t last = usable ? (end - HIGH_BASE) / HIGH_CHUNK_SIZE
                           : (end - HIGH_BASE + HIGH_CHUNK_SIZE - 1) / HIGH_CHUNK_SIZE;
    for (uint64_t c = first; c < last; c++)
        bit_set(high_ram_map, c, usable);
}

static void high_take(uint64_t chunk)
{
    if (bit_get(high_ram_map, chunk) && !bit_get(high_used_map, chunk)) {
        bit_set(high_used_map, chunk, true);
        high_free_chunks--;
        free_pages -= CHUNK_PAGES;
    }
}

static void high_give(uint64_t chunk)
{
    if (bit_get(high_ram_map, chunk) && bit_get(high_used_map, chunk)) {
        bit_set(high_used_map, chunk, false);
        high_free_chunks++;
        free_pages += CHUNK_PAGES;
    }
}

/* Applies `fn` to every chunk [addr, addr + bytes) touches above 4 GiB. */
static void high_each(uint64_t addr, uint64_t bytes, void (*fn)(uint64_t))
{
    uint64_t end = addr + bytes;
    if (end <= HIGH_BASE)
        return;
    if (addr < HIGH_BASE)
        addr = HIGH_BASE;
    if (end > LAYOUT_HIGH_MEMORY_TOP)
        end = LAYOUT_HIGH_MEMORY_TOP;
    for (uint64_t c = (addr - HIGH_BASE) / HIGH_CHUNK_SIZE;
         c < (end - HIGH_BASE + HIGH_CHUNK_SIZE - 1) / HIGH_CHUNK_SIZE; c++)
        fn(c);
}

static uint64_t count_bits(const uint64_t *map, uint64_t words)
{
    uint64_t n = 0;
    for (uint64_t w = 0; w < words; w++)
        /* Counted by hand: __builtin_popcountll would need libgcc without -mpopcnt. */
        for (uint64_t bits = map[w]; bits; bits &= bits - 1)
            n++;
    return n;
}

static void owner_record(const char *name, uint64_t addr, uint64_t npages)
{
    if (owner_count == PAGE_OWNERS_MAX) {
        printk("taipan: page owner table full, \"%s\" at 0x%lx is unnamed\n", name, (unsigned long)addr);
        return;
    }
    struct page_owner *o = &owners[owner_count++];
    size_t i = 0;
    for (; i + 1 < sizeof(o->name) && name[i]; i++)
        o->name[i] = name[i];
    o->name[i] = '\0';
    o->addr = addr;
    o->npages = npages;
}

void page_alloc_init(const struct boot_info *bi)
{
    memset(ram_map, 0, sizeof(ram_map));
    memset(high_ram_map, 0, sizeof(high_ram_map));
    owner_count = 0;

    /* Usable first, then every other type on top: overlapping entries resolve to "not RAM". */
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < bi->region_count; i++) {
            const struct boot_region *r = &bi->regions[i];
            bool usable = r->type == BOOT_REGION_USABLE;
            if (usable != (pass == 0))
                continue;
            ram_mark(r->base, r->length, usable);
            high_mark(r->base, r->length, usable);
        }
    }

    for (uint64_t w = 0; w < WORDS; w++)
        used_map[w] = ~ram_map[w];
    for (uint64_t w = 0; w < HIGH_WORDS; w++)
        high_used_map[w] = ~high_ram_map[w];
    high_chunks = high_free_chunks = count_bits(high_ram_map, HIGH_WORDS);
    total_pages = count_bits(ram_map, WORDS) + high_chunks * CHUNK_PAGES;
    free_pages = total_pages;
    ram_top = 0;
    for (uint64_t p = 0; p < PAGE_LIMIT; p++)
        if (bit_get(ram_map, p))
            ram_top = (p + 1) * PAGE_SIZE;
    for (uint64_t c = 0; c < HIGH_CHUNKS; c++)
        if (bit_get(high_ram_map, c))
            ram_top = HIGH_BASE + (c + 1) * HIGH_CHUNK_SIZE;

    /* Real-mode IVT, BIOS data, EBDA and option ROMs: firmware may still read them. */
    page_reserve_named("low memory", 0, (1u << 20) / PAGE_SIZE);
    /* The image begins with the boot stub's page tables, GDT and TSS, all live. */
    uint64_t image_start = (uintptr_t)__image_start < LAYOUT_LOAD_BASE ? (uintptr_t)__image_start : LAYOUT_LOAD_BASE;
    uint64_t image_end = (uintptr_t)__image_end;
    page_reserve_named("image", image_start, (image_end - image_start + PAGE_SIZE - 1) / PAGE_SIZE);
    /*
     * Modules stay reserved for good: partitions load their guests from them.
     * The loader's info structure needs no hold: boot_info_parse copied it
     * before this allocator existed.
     */
    for (uint32_t i = 0; i < bi->module_count; i++) {
        const struct boot_module *m = &bi->modules[i];
        uint64_t first = m->start & ~(PAGE_SIZE - 1);
        char name[PAGE_OWNER_NAME_SIZE];
        snprintk(name, sizeof(name), m->cmdline[0] ? "module %s" : "module", m->cmdline);
        page_reserve_named(name, m->start, (m->end - first + PAGE_SIZE - 1) / PAGE_SIZE);
    }
}

bool page_reserve_named(const char *owner, uint64_t addr, size_t npages)
{
    uint64_t first = addr / PAGE_SIZE;
    for (uint64_t p = first; p < first + npages && p < PAGE_LIMIT; p++)
        page_take(p);
    high_each(first * PAGE_SIZE, npages * PAGE_SIZE, high_take);
    size_t before = owner_count;
    owner_record(owner, first * PAGE_SIZE, npages);
    return owner_count != before;
}

uint64_t page_alloc(size_t npages)
{
    if (!npages || npages > PAGE_LIMIT)
        return 0;
    /* Address 0 means failure, so page 0 is never handed out even if freed. */
    uint64_t p = 1;
    while (p + npages <= PAGE_LIMIT) {
        if (p % 64 == 0 && used_map[p / 64] == ~0ull) {
            p += 64;
            continue;
        }
        uint64_t run = p;
        while (run < p + npages && !bit_get(used_map, run))
            run++;
        if (run == p + npages) {
            for (uint64_t q = p; q < run; q++)
                page_take(q);
            return p * PAGE_SIZE;
        }
        p = run + 1;
    }
    return 0;
}

uint64_t page_alloc_named(const char *owner, size_t npages)
{
    uint64_t addr = page_alloc(npages);
    if (addr)
        owner_record(owner, addr, npages);
    return addr;
}

void page_free(uint64_t addr, size_t npages)
{
    uint64_t first = addr / PAGE_SIZE;
    for (uint64_t p = first; p < first + npages && p < PAGE_LIMIT; p++)
        page_give(p);
    high_each(first * PAGE_SIZE, npages * PAGE_SIZE, high_give);
    for (size_t i = 0; i < owner_count; i++) {
        if (owners[i].addr == addr && owners[i].npages == npages) {
            for (size_t j = i + 1; j < owner_count; j++)
                owners[j - 1] = owners[j];
            owner_count--;
            break;
        }
    }
}

void page_alloc_stats(struct page_stats *out)
{
    out->total_pages = total_pages;
    out->free_pages = free_pages;
    out->reserved_pages = total_pages - free_pages;
    out->high_pages = high_chunks * CHUNK_PAGES;
    out->high_free_pages = high_free_chunks * CHUNK_PAGES;
    out->top = ram_top;
}

bool page_range_free(uint64_t addr, uint64_t size)
{
    uint64_t end = addr + size;
    if (!size || end < addr || end > LAYOUT_HIGH_MEMORY_TOP)
        return false;
    for (uint64_t a = addr; a < end && a < HIGH_BASE; a += PAGE_SIZE)
        if (!bit_get(ram_map, a / PAGE_SIZE) || bit_get(used_map, a / PAGE_SIZE))
            return false;
    if (end > HIGH_BASE) {
        uint64_t from = addr < HIGH_BASE ? HIGH_BASE : addr;
        for (uint64_t c = (from - HIGH_BASE) / HIGH_CHUNK_SIZE;
             c < (end - HIGH_BASE + HIGH_CHUNK_SIZE - 1) / HIGH_CHUNK_SIZE; c++)
            if (!bit_get(high_ram_map, c) || bit_get(high_used_map, c))
                return false;
    }
    return true;
}

const struct page_owner *page_owner_at(size_t index)
{
    return index < owner_count ? &owners[index] : NULL;
}
