/* The firmware's ACPI tables as Taipan reads them: where the RSDP came from, and the MADT's CPUs and IOAPICs. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#define ACPI_CPUS_MAX 64
#define ACPI_IOAPICS_MAX 8

struct acpi_cpu {
    uint32_t apic_id;
    uint32_t acpi_id;     /* the processor's ACPI UID */
    bool enabled;         /* flags bit 0: usable now (not merely online-capable) */
};

struct acpi_ioapic {
    uint32_t id, address, gsi_base;
};

struct acpi_info {
    const char *rsdp_source;   /* "multiboot2 ACPI 2.0 tag", "EBDA", ..., or "none" */
    uint64_t rsdp_address;     /* physical, or 0 when it is the loader's copy in a tag */
    uint8_t revision;          /* the RSDP's: 0 for ACPI 1.0 (RSDT), 2 and up (XSDT) */
    char oem_id[7];
    uint64_t madt_address;     /* 0: no MADT, so one CPU */
    uint64_t lapic_address;
    uint32_t cpu_count;        /* MADT entries, enabled or not; cpus_dropped beyond ACPI_CPUS_MAX */
    uint32_t cpus_dropped;
    struct acpi_cpu cpus[ACPI_CPUS_MAX];
    uint32_t ioapic_count;
    struct acpi_ioapic ioapics[ACPI_IOAPICS_MAX];
    char problem[96];          /* why a table was refused (bad checksum, ...), or empty */
};

/* Find the RSDP (multiboot2 tag, else EBDA and BIOS area scan), then the MADT. */
void acpi_init(void);
const struct acpi_info *acpi_get(void);
