/* Partitions from the generated table: checked, their memory reserved, loaded and started on demand. */
#include "cpu.h"
#include "layout.h"
#include "libc.h"
#include "multiboot.h"
#include "page_alloc.h"
#include "partition.h"
#include "printk.h"
#include "tsc.h"

/* The toolchain links the table (toolchain/ptable.py) into the image between these. */
extern const uint8_t __partitions_start[], __partitions_end[];

static struct partition parts[PARTITIONS_MAX];
static int part_count;
static const struct pt_header *table;
static bool trusted;

static bool ram_usable(uint64_t base, uint64_t size)
{
    const struct boot_info *bi = boot_info_get();
    for (uint32_t i = 0; i < bi->region_count; i++) {
        const struct boot_region *r = &bi->regions[i];
        if (r->type == BOOT_REGION_USABLE && base >= r->base && base + size <= r->base + r->length) {
            return true;
        }
    }
    return false;
}

/*
 * Whether the partition's nested tables map 1 GiB pages (bit 7 in a PDPT
 * entry). The toolchain builds EPT and NPT alike, and bit 7 means "large" in
 * both formats, so the NPT's walk answers for the EPT too.
 */
static bool uses_1g_pages(uint64_t npt_root)
{
    const uint64_t *pml4 = (const uint64_t *)(uintptr_t)(npt_root & ~0xfffull);
    for (int i = 0; i < 512; i++) {
        if (!(pml4[i] & 1))
            continue;
        const uint64_t *pdpt = (const uint64_t *)(uintptr_t)(pml4[i] & 0x000ffffffffff000ull);
        for (int j = 0; j < 512; j++)
            if ((pdpt[j] & 1) && (pdpt[j] & (1u << 7)))
                return true;
    }
    return false;
}

static const char *table_problem(void)
{
    uint64_t blob = (uint64_t)(__partitions_end - __partitions_start);
    if (blob < sizeof(struct pt_header)) {
        return "no partition table in the image";
    }
    if (memcmp(table->magic, PT_MAGIC, 8) != 0) {
        return "partition table: bad magic";
    }
    if (table->version != PT_VERSION) {
        return "partition table: version mismatch with this hypervisor";
    }
    if (table->header_size != sizeof(struct pt_header) || table->desc_size != sizeof(struct pt_partition)) {
        return "partition table: record sizes differ from this hypervisor's";
    }
    if (table->blob_size != blob || table->partition_count > PARTITIONS_MAX ||
        table->header_size + (uint64_t)table->partition_count * table->desc_size > blob ||
        table->tables_offset + table->tables_size > blob) {
        return "partition table: sizes inconsistent with the image";
    }
    if (!ram_usable(table->tables_host_base, table->tables_size)) {
        return "partition table: the tables region is not usable RAM on this machine";
    }
    return NULL;
}

static void partition_setup(struct partition *p, int index, const struct pt_partition *d)
{
    p->index = index;
    p->desc = d;
    p->cpu = d->cpu;
    p->state = PART_CREATED;
    uint64_t pages = d->mem_size / PAGE_SIZE;
    if (d->mem_host_base + d->mem_size > LAYOUT_HIGH_MEMORY_TOP) {
        p->state = PART_UNUSABLE;
        snprintk(p->reason, sizeof(p->reason), "its memory ends above 0x%llx, the most Taipan maps",
                 (unsigned long long)LAYOUT_HIGH_MEMORY_TOP);
        return;
    }
    if (uses_1g_pages(d->npt_cr3) && !cpu_info_get()->nested_1g) {
        p->state = PART_UNUSABLE;
        snprintk(p->reason, sizeof(p->reason),
                 "its EPT/NPT map 1 GiB pages, which this CPU's nested paging lacks");
        return;
    }
    if (!ram_usable(d->mem_host_base, d->mem_size)) {
        p->state = PART_UNUSABLE;
        snprintk(p->reason, sizeof(p->reason),
                 "its memory %#llx-%#llx is not usable RAM on this machine (see 'info')",
                 (unsigned long long)d->mem_host_base,
                 (unsigned long long)(d->mem_host_base + d->mem_size - 1));
        return;
    }
    /* A boot module the loader put there (GRUB picks its own places) would be overwritten. */
    if (!page_range_free(d->mem_host_base, d->mem_size)) {
        p->state = PART_UNUSABLE;
        snprintk(p->reason, sizeof(p->reason),
                 "its memory %#llx-%#llx overlaps memory already in use (see 'mem')",
                 (unsigned long long)d->mem_host_base,
                 (unsigned long long)(d->mem_host_base + d->mem_size - 1));
        return;
    }
    page_reserve_named(d->name, d->mem_host_base, pages);
    uint32_t console_pages = (d->console_size + PAGE_SIZE - 1) / PAGE_SIZE;
    uint64_t buf = page_alloc_named("consoles", console_pages);
    console_ring_init(&p->console, (uint8_t *)(uintptr_t)buf, buf ? console_pages * (uint32_t)PAGE_SIZE : 0);
}

void partitions_init(void)
{
    table = (const struct pt_header *)__partitions_start;
    journal_init();
    const char *problem = table_problem();
    if (problem) {
        printk("taipan: %s; no partitions\n", problem);
        table = NULL;
        return;
    }
    /* The tables hold host-physical addresses inside their region: put them there. */
    page_reserve_named("partition tables", table->tables_host_base, table->tables_size / PAGE_SIZE);
    memcpy((void *)(uintptr_t)table->tables_host_base, __partitions_start + table->tables_offset,
           table->tables_size);
    const uint8_t *descs = __partitions_start + table->header_size;
    for (uint32_t i = 0; i < table->partition_count; i++) {
        partition_setup(&parts[i], (int)i, (const struct pt_partition *)(descs + i * table->desc_size));
    }
    part_count = (int)table->partition_count;
}

int partition_count(void)
{
    return part_count;
}

struct partition *partition_get(int index)
{
    return index >= 0 && index < part_count ? &parts[index] : NULL;
}

void partitions_trust(void)
{
    trusted = table != NULL;
}

bool partitions_trusted(void)
{
    return trusted;
}

const struct pt_header *partitions_table(void)
{
    return table;
}

const uint8_t *partitions_blob(uint64_t *size)
{
    *size = (uint64_t)(__partitions_end - __partitions_start);
    return __partitions_start;
}

void partition_load_memory(struct partition *p)
{
    const struct pt_partition *d = p->desc;
    uint8_t *mem = (uint8_t *)(uintptr_t)d->mem_host_base;
    /*
     * 64 bytes a step, not the C library's 4-byte loop: a partition can be
     * gigabytes, and under an emulator each store instruction costs (rep stos
     * measured slower still under QEMU TCG). mem_size is a multiple of 2 MiB.
     */
    for (uint64_t *q = (uint64_t *)mem, *end = (uint64_t *)(mem + d->mem_size); q < end; q += 8) {
        q[0] = 0, q[1] = 0, q[2] = 0, q[3] = 0;
        q[4] = 0, q[5] = 0, q[6] = 0, q[7] = 0;
    }
    for (uint32_t i = 0; i < d->chunk_count && i < PT_MAX_CHUNKS; i++) {
        const struct pt_chunk *c = &d->chunks[i];
        memcpy(mem + c->gpa, __partitions_start + c->blob_offset, c->size);
    }
    /* The toolchain cannot know this machine's TSC rate; a linux partition's
     * command line ends with room for it (toolchain/linux_boot.py). */
    if (d->tsc_khz_gpa && d->tsc_khz_gpa + 11 <= d->mem_size)
        snprintk((char *)(mem + d->tsc_khz_gpa), 11, "%llu", (unsigned long long)tsc_khz());
}
