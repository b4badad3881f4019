/* What the boot loader told us (memory map, command line, modules), copied out of its structures. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define MULTIBOOT1_MAGIC 0x2BADB002u
#define MULTIBOOT2_MAGIC 0x36D76289u

#define BOOT_INFO_MAX_REGIONS 64
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
