/* Multiboot1 and multiboot2 parsing into one neutral struct boot_info. */
#include <stddef.h>
#include "libc.h"
#include "multiboot.h"
#include "printk.h"

/*
 * Held by value: the loader's structures lie in RAM that the page allocator
 * will hand out, so nothing here may point into them.
 */
static struct boot_info info;

/* Multiboot1 information (multiboot specification 0.6.96, section 3.3). */
#define MB1_FLAG_MEM (1u << 0)
#define MB1_FLAG_CMDLINE (1u << 2)
#define MB1_FLAG_MODS (1u << 3)
#define MB1_FLAG_MMAP (1u << 6)
#define MB1_FLAG_LOADER (1u << 9)

struct mb1_info {
    uint32_t flags;
    uint32_t mem_lower, mem_upper;   /* KiB below 1 MiB, KiB from 1 MiB */
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
    uint32_t drives_length, drives_addr;
    uint32_t config_table;
    uint32_t boot_loader_name;
};

struct mb1_module {
    uint32_t start, end, cmdline, reserved;
};

/* Each entry's size field excludes itself, and base is only 4-byte aligned. */
struct mb1_mmap_entry {
    uint32_t size;
    uint64_t base, length;
    uint32_t type;
} __attribute__((packed));

/* Multiboot2 information (multiboot2 specification, section 3.6). */
#define MB2_TAG_END 0
#define MB2_TAG_CMDLINE 1
#define MB2_TAG_LOADER 2
#define MB2_TAG_MODULE 3
#define MB2_TAG_MEMINFO 4
#define MB2_TAG_MMAP 6
#define MB2_TAG_FRAMEBUFFER 8
#define MB2_TAG_EFI32 11
#define MB2_TAG_EFI64 12
#define MB2_TAG_EFI_MMAP 17
#define MB2_TAG_EFI_BS 18
#define MB2_TAG_ACPI_OLD 14
#define MB2_TAG_ACPI_NEW 15

struct mb2_tag {
    uint32_t type, size;
};

struct mb2_module {
    struct mb2_tag tag;
    uint32_t start, end;
    char cmdline[];
};

struct mb2_meminfo {
    struct mb2_tag tag;
    uint32_t mem_lower, mem_upper;
};

struct mb2_mmap {
    struct mb2_tag tag;
    uint32_t entry_size, entry_version;
};

struct mb2_mmap_entry {
    uint64_t base, length;
    uint32_t type, reserved;
};

struct mb2_framebuffer {
    struct mb2_tag tag;
    uint64_t addr;
    uint32_t pitch, width, height;
    uint8_t bpp, type;
    uint16_t reserved;
    uint8_t red_pos, red_bits, green_pos, green_bits, blue_pos, blue_bits;
} __attribute__((packed));

struct mb2_efi64 {
    struct mb2_tag tag;
    uint64_t pointer;
} __attribute__((packed));

struct mb2_efi32 {
    struct mb2_tag tag;
    uint32_t pointer;
};

/* Tag 17: the EFI memory map as GetMemoryMap returned it (UEFI spec 7.2). */
struct mb2_efi_mmap {
    struct mb2_tag tag;
    uint32_t desc_size, desc_version;
};

struct efi_memory_descriptor {
    uint32_t type, pad;
    uint64_t phys_start, virt_start, pages;
    uint64_t attribute;
};

/* EFI memory types (UEFI spec, table 7-5). */
#define EFI_LOADER_CODE 1
#define EFI_LOADER_DATA 2
#define EFI_BOOT_SERVICES_CODE 3
#define EFI_BOOT_SERVICES_DATA 4
#define EFI_CONVENTIONAL 7
#define EFI_UNUSABLE 8
#define EFI_ACPI_RECLAIM 9
#define EFI_ACPI_NVS 10
#define EFI_PAGE_SIZE 4096ull

static const void *phys(uint64_t addr)
{
    return (const void *)(uintptr_t)addr;
}

static void copy_string(char *dst, size_t size, const char *src)
{
    size_t i = 0;
    if (src)
        for (; i + 1 < size && src[i]; i++)
            dst[i] = src[i];
    dst[i] = '\0';
}

static void region_add(uint64_t base, uint64_t length, uint32_t type)
{
    if (!length)
        return;
    info.map_entries++;
    /* Firmware lists ranges in order; one range per run of a type keeps the table small. */
    if (info.region_count) {
        struct boot_region *last = &info.regions[info.region_count - 1];
        if (last->type == type && last->base + last->length == base) {
            last->length += length;
            return;
        }
    }
    if (info.region_count == BOOT_INFO_MAX_REGIONS) {
        info.regions_dropped++;
        return;
    }
    info.regions[info.region_count++] = (struct boot_region){ base, length, type };
}

/* Used only when the loader gave no map: the two classic usable ranges. */
static void regions_from_meminfo(uint32_t lower_kib, uint32_t upper_kib)
{
    region_add(0, (uint64_t)lower_kib << 10, BOOT_REGION_USABLE);
    region_add(1ull << 20, (uint64_t)upper_kib << 10, BOOT_REGION_USABLE);
}

static void module_add(uint64_t start, uint64_t end, const char *cmdline)
{
    if (info.module_count == BOOT_INFO_MAX_MODULES) {
        printk("taipan: more than %d boot modules, ignoring module at 0x%lx\n",
               BOOT_INFO_MAX_MODULES, (unsigned long)start);
        return;
    }
    struct boot_module *m = &info.modules[info.module_count++];
    m->start = start;
    m->end = end;
    copy_string(m->cmdline, sizeof(m->cmdline), cmdline);
}

static void parse_mb1(uint64_t addr)
{
    const struct mb1_info *mb = phys(addr);

    if (mb->flags & MB1_FLAG_MMAP) {
        info.map_source = BOOT_MAP_MB1;
        for (uint64_t off = 0; off + sizeof(struct mb1_mmap_entry) <= mb->mmap_length;) {
            const struct mb1_mmap_entry *e = phys(mb->mmap_addr + off);
            region_add(e->base, e->length, e->type);
            off += (uint64_t)e->size + sizeof(e->size);
        }
    } else if (mb->flags & MB1_FLAG_MEM) {
        info.map_source = BOOT_MAP_MB1_MEMINFO;
        regions_from_meminfo(mb->mem_lower, mb->mem_upper);
    }
    if (mb->flags & MB1_FLAG_CMDLINE)
        copy_string(info.cmdline, sizeof(info.cmdline), phys(mb->cmdline));
    if (mb->flags & MB1_FLAG_LOADER)
        copy_string(info.loader, sizeof(info.loader), phys(mb->boot_loader_name));
    if (mb->flags & MB1_FLAG_MODS) {
        const struct mb1_module *mods = phys(mb->mods_addr);
        for (uint32_t i = 0; i < mb->mods_count; i++)
            module_add(mods[i].start, mods[i].end, mods[i].cmdline ? phys(mods[i].cmdline) : NULL);
    }
}

uint32_t boot_efi_type_to_region(uint32_t efi_type)
{
    switch (efi_type) {
    /*
     * Taipan runs after ExitBootServices and calls no runtime service, so the
     * loader's and boot services' memory is free RAM like conventional memory.
     * The loader's own structures in it were copied out before the allocator
     * starts, and the modules in it are reserved by name.
     */
    case EFI_LOADER_CODE:
    case EFI_LOADER_DATA:
    case EFI_BOOT_SERVICES_CODE:
    case EFI_BOOT_SERVICES_DATA:
    case EFI_CONVENTIONAL:
        return BOOT_REGION_USABLE;
    case EFI_ACPI_RECLAIM:
        return BOOT_REGION_ACPI_RECLAIMABLE;
    case EFI_ACPI_NVS:
        return BOOT_REGION_ACPI_NVS;
    case EFI_UNUSABLE:
        return BOOT_REGION_BAD;
    default:
        /* Runtime services code and data, MMIO, PAL code, persistent memory, reserved. */
        return BOOT_REGION_RESERVED;
    }
}

static void regions_from_efi(const struct mb2_efi_mmap *map)
{
    info.efi_desc_version = map->desc_version;
    for (uint64_t e = sizeof(*map); e + map->desc_size <= map->tag.size; e += map->desc_size) {
        const struct efi_memory_descriptor *d = (const void *)((const char *)map + e);
        uint32_t type = boot_efi_type_to_region(d->type);
        /* Still running boot services own their memory: keep out of it. */
        if (info.efi_boot_services && (d->type == EFI_BOOT_SERVICES_CODE || d->type == EFI_BOOT_SERVICES_DATA))
            type = BOOT_REGION_RESERVED;
        region_add(d->phys_start, d->pages * EFI_PAGE_SIZE, type);
    }
}

static void regions_from_bios(const struct mb2_mmap *map)
{
    for (uint64_t e = sizeof(*map); e + map->entry_size <= map->tag.size; e += map->entry_size) {
        const struct mb2_mmap_entry *ent = (const void *)((const char *)map + e);
        region_add(ent->base, ent->length, ent->type);
    }
}

static void framebuffer_copy(const struct mb2_framebuffer *t)
{
    if (t->tag.size < sizeof(*t) - 6)
        return;
    info.have_framebuffer = true;
    info.fb = (struct boot_framebuffer){
        .addr = t->addr, .pitch = t->pitch, .width = t->width, .height = t->height,
        .bpp = t->bpp, .type = t->type,
    };
    if (t->type == 1 && t->tag.size >= sizeof(*t)) {
        info.fb.red_pos = t->red_pos;
        info.fb.red_bits = t->red_bits;
        info.fb.green_pos = t->green_pos;
        info.fb.green_bits = t->green_bits;
        info.fb.blue_pos = t->blue_pos;
        info.fb.blue_bits = t->blue_bits;
    }
}

static void parse_mb2(uint64_t addr)
{
    uint32_t total = *(const uint32_t *)phys(addr);
    const struct mb2_meminfo *meminfo = NULL;
    const struct mb2_mmap *bios_map = NULL;
    const struct mb2_efi_mmap *efi_map = NULL;

    /* Tags start after the 8-byte header and are each padded to 8 bytes. */
    for (uint64_t off = 8; off + sizeof(struct mb2_tag) <= total;) {
        const struct mb2_tag *tag = phys(addr + off);
        if (tag->type == MB2_TAG_END || tag->size < sizeof(struct mb2_tag))
            break;
        switch (tag->type) {
        case MB2_TAG_CMDLINE:
            copy_string(info.cmdline, sizeof(info.cmdline), (const char *)(tag + 1));
            break;
        case MB2_TAG_LOADER:
            copy_string(info.loader, sizeof(info.loader), (const char *)(tag + 1));
            break;
        case MB2_TAG_MODULE: {
            const struct mb2_module *m = (const void *)tag;
            module_add(m->start, m->end, m->cmdline);
            break;
        }
        case MB2_TAG_MEMINFO:
            meminfo = (const void *)tag;
            break;
        case MB2_TAG_MMAP:
            if (((const struct mb2_mmap *)tag)->entry_size >= sizeof(struct mb2_mmap_entry))
                bios_map = (const void *)tag;
            break;
        case MB2_TAG_EFI_MMAP:
            if (((const struct mb2_efi_mmap *)tag)->desc_size >= sizeof(struct efi_memory_descriptor))
                efi_map = (const void *)tag;
            break;
        case MB2_TAG_EFI64:
            info.efi_bits = 64;
            info.efi_system_table = ((const struct mb2_efi64 *)tag)->pointer;
            break;
        case MB2_TAG_EFI32:
            if (info.efi_bits != 64) {
                info.efi_bits = 32;
                info.efi_system_table = ((const struct mb2_efi32 *)tag)->pointer;
            }
            break;
        case MB2_TAG_EFI_BS:
            info.efi_boot_services = true;
            break;
        case MB2_TAG_FRAMEBUFFER:
            framebuffer_copy((const void *)tag);
            break;
        case MB2_TAG_ACPI_OLD:
        case MB2_TAG_ACPI_NEW: {
            /* The new tag (an ACPI 2.0 RSDP with the XSDT) wins over the old one. */
            uint32_t version = tag->type == MB2_TAG_ACPI_NEW ? 2 : 1;
            uint32_t len = tag->size - (uint32_t)sizeof(*tag);
            if (version < info.rsdp_version)
                break;
            if (len > sizeof(info.rsdp))
                len = sizeof(info.rsdp);
            memset(info.rsdp, 0, sizeof(info.rsdp));
            memcpy(info.rsdp, tag + 1, len);
            info.rsdp_version = version;
            break;
        }
        default:
            break;
        }
        off += (tag->size + 7) & ~7u;
    }
    /*
     * On UEFI, GRUB builds tag 6 from the EFI map itself, folding types
     * together; the EFI map is the firmware's own and wins (it also tells
     * ACPI NVS and runtime-services memory apart, which must stay untouched).
     */
    if (efi_map) {
        info.map_source = BOOT_MAP_MB2_EFI;
        regions_from_efi(efi_map);
    } else if (bios_map) {
        info.map_source = BOOT_MAP_MB2_BIOS;
        regions_from_bios(bios_map);
    } else if (meminfo) {
        info.map_source = BOOT_MAP_MB2_MEMINFO;
        regions_from_meminfo(meminfo->mem_lower, meminfo->mem_upper);
    }
}

const char *boot_map_source_name(enum boot_map_source source)
{
    switch (source) {
    case BOOT_MAP_MB1:
        return "BIOS memory map (multiboot1 mmap)";
    case BOOT_MAP_MB1_MEMINFO:
        return "lower/upper memory sizes only (multiboot1)";
    case BOOT_MAP_MB2_BIOS:
        return "BIOS memory map (multiboot2 tag 6)";
    case BOOT_MAP_MB2_EFI:
        return "EFI memory map (multiboot2 tag 17)";
    case BOOT_MAP_MB2_MEMINFO:
        return "lower/upper memory sizes only (multiboot2 tag 4)";
    default:
        return "none";
    }
}

const char *boot_protocol_name(uint32_t magic)
{
    switch (magic) {
    case MULTIBOOT1_MAGIC:
        return "multiboot1";
    case MULTIBOOT2_MAGIC:
        return "multiboot2";
    default:
        return "unknown";
    }
}

bool boot_info_parse(uint32_t magic, uint64_t info_addr)
{
    memset(&info, 0, sizeof(info));
    switch (magic) {
    case MULTIBOOT1_MAGIC:
        info.protocol = 1;
        parse_mb1(info_addr);
        break;
    case MULTIBOOT2_MAGIC:
        info.protocol = 2;
        parse_mb2(info_addr);
        break;
    default:
        printk("taipan: boot loader magic 0x%08x is neither multiboot1 (0x%08x) nor "
               "multiboot2 (0x%08x): no memory map, cannot continue\n",
               magic, MULTIBOOT1_MAGIC, MULTIBOOT2_MAGIC);
        return false;
    }
    if (!info.region_count)
        printk("taipan: the boot loader reported no memory\n");
    if (info.regions_dropped)
        printk("taipan: memory map truncated: %u regions ignored\n", info.regions_dropped);
    if (info.efi_boot_services)
        printk("taipan: the loader left EFI boot services running (multiboot2 tag 18); Taipan "
               "calls none and keeps out of their memory\n");
    return true;
}

const struct boot_info *boot_info_get(void)
{
    return &info;
}
