/* What the boot loader told us (memory map, command line, modules), copied out of its structures. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define MULTIBOOT1_MAGIC 0x2BADB002u
#define MULTIBOOT2_MAGIC 0x36D76289u

#define BOOT_INFO_MAX_REGIONS 128   /* after merging: EFI maps list many small ranges */
#define BOOT_INFO_MAX_MODULES 16
#define BOOT_INFO_CMDLINE_SIZE 256
#define BOOT_INFO_LOADER_SIZE 64
#define BOOT_INFO_MODULE_CMDLINE_SIZE 128
#define BOOT_INFO_RSDP_SIZE 36   /* an ACPI 2.0 RSDP; ACPI 1.0's is its first 20 bytes */

/* Region types as multiboot numbers them. */
#define BOOT_REGION_USABLE 1
#define BOOT_REGION_ACPI_RECLAIMABLE 3
#define BOOT_REGION_ACPI_NVS 4
#define BOOT_REGION_BAD 5
/* Reserved is 2; EFI types without a multiboot equivalent map to it. */
#define BOOT_REGION_RESERVED 2

/* Where the memory map came from: the EFI map is the truth when both are given. */
enum boot_map_source {
    BOOT_MAP_NONE,
    BOOT_MAP_MB1,        /* multiboot1 mmap (the BIOS e820 map) */
    BOOT_MAP_MB1_MEMINFO,/* multiboot1 mem_lower/mem_upper only */
    BOOT_MAP_MB2_BIOS,   /* multiboot2 tag 6 (e820-style) */
    BOOT_MAP_MB2_EFI,    /* multiboot2 tag 17: the firmware's EFI memory map */
    BOOT_MAP_MB2_MEMINFO,/* multiboot2 tag 4 only */
};

/* The multiboot2 framebuffer tag (8), as GRUB set the mode up. */
struct boot_framebuffer {
    uint64_t addr;
    uint32_t pitch, width, height;
    uint8_t bpp, type;             /* type 1: direct RGB, 2: EGA text; others unused here */
    uint8_t red_pos, red_bits, green_pos, green_bits, blue_pos, blue_bits;
};

struct boot_region {
    uint64_t base, length;
    uint32_t type;
};

struct boot_module {
    uint64_t start, end;   /* [start, end): the loader's placement, left in place */
    char cmdline[BOOT_INFO_MODULE_CMDLINE_SIZE];
};

struct boot_info {
    uint32_t protocol;     /* 1 or 2: which multiboot */
    uint32_t region_count;
    uint32_t regions_dropped;   /* map entries beyond BOOT_INFO_MAX_REGIONS */
    uint32_t module_count;
    struct boot_region regions[BOOT_INFO_MAX_REGIONS];
    struct boot_module modules[BOOT_INFO_MAX_MODULES];
    char cmdline[BOOT_INFO_CMDLINE_SIZE];
    char loader[BOOT_INFO_LOADER_SIZE];
    enum boot_map_source map_source;
    uint32_t map_entries;          /* entries the loader's map had, before merging */
    uint32_t efi_desc_version;     /* the EFI map's descriptor version (1 today) */
    uint32_t efi_bits;             /* 64 or 32: the EFI system table tag seen, else 0 */
    uint64_t efi_system_table;     /* its physical address (tag 12 or 11), else 0 */
    bool efi_boot_services;        /* tag 18: the loader left boot services running */
    bool have_framebuffer;
    struct boot_framebuffer fb;
    /* The RSDP as the loader copied it into an ACPI tag (multiboot2 only):
     * rsdp_version 0 when no tag came, 1 for the old tag, 2 for the new one. */
    uint32_t rsdp_version;
    uint8_t rsdp[BOOT_INFO_RSDP_SIZE];
};

/* "multiboot1", "multiboot2" or "unknown". */
const char *boot_protocol_name(uint32_t magic);
/* Copies the loader's information; on an unknown magic prints why and returns false. */
bool boot_info_parse(uint32_t magic, uint64_t info_addr);
const struct boot_info *boot_info_get(void);
/* "EFI memory map (multiboot2 tag 17)" and the like. */
const char *boot_map_source_name(enum boot_map_source source);
/* The multiboot2 region type an EFI memory type counts as once boot services have exited. */
uint32_t boot_efi_type_to_region(uint32_t efi_type);
