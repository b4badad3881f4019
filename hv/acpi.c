/* ACPI discovery: the RSDP from the boot loader's tag or the BIOS areas, the RSDT/XSDT, and the MADT's CPUs and IOAPICs. */
#include "acpi.h"
#include "libc.h"
#include "multiboot.h"
#include "printk.h"

/* Where ACPI 6.5 section 5.2.5.1 says a BIOS leaves the RSDP: the first KiB
 * of the EBDA (its segment at 0x40e) or 0xe0000-0xfffff, on 16-byte boundaries. */
#define BDA_EBDA_SEGMENT 0x40eu
#define EBDA_SCAN_BYTES 1024u
#define BIOS_AREA_START 0xe0000u
#define BIOS_AREA_END 0x100000u
#define RSDP_V1_BYTES 20u
#define RSDP_V2_BYTES 36u
/* Tables above the boot identity map cannot be read yet. */
#define READABLE_LIMIT (4ull << 30)

#define MADT_LAPIC 0
#define MADT_IOAPIC 1
#define MADT_LAPIC_OVERRIDE 5
#define MADT_X2APIC 9
#define MADT_FLAG_ENABLED 1u

struct rsdp {
    char signature[8];
    uint8_t checksum;
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt;
    uint32_t length;   /* revision >= 2 from here on */
    uint64_t xsdt;
    uint8_t ext_checksum;
    uint8_t reserved[3];
} __attribute__((packed));

struct sdt_header {
    char signature[4];
    uint32_t length;
    uint8_t revision, checksum;
    char oem_id[6], oem_table_id[8];
    uint32_t oem_revision, creator_id, creator_revision;
} __attribute__((packed));

struct madt {
    struct sdt_header h;
    uint32_t lapic_address;
    uint32_t flags;
} __attribute__((packed));

static struct acpi_info info;

static uint8_t sum_bytes(const void *p, uint32_t n)
{
    const uint8_t *b = p;
    uint8_t s = 0;
    while (n--)
        s = (uint8_t)(s + *b++);
    return s;
}

static bool rsdp_valid(const struct rsdp *r)
{
    if (memcmp(r->signature, "RSD PTR ", 8) != 0 || sum_bytes(r, RSDP_V1_BYTES) != 0)
        return false;
    return r->revision < 2 || sum_bytes(r, RSDP_V2_BYTES) == 0;
}

static const struct rsdp *rsdp_scan(uint64_t start, uint64_t end)
{
    for (uint64_t a = start & ~15ull; a + RSDP_V1_BYTES <= end; a += 16) {
        const struct rsdp *r = (const void *)(uintptr_t)a;
        if (rsdp_valid(r))
            return r;
    }
    return 0;
}

static const struct rsdp *rsdp_find(void)
{
    const struct boot_info *bi = boot_info_get();
    if (bi->rsdp_version) {
        const struct rsdp *r = (const void *)bi->rsdp;
        if (rsdp_valid(r)) {
            info.rsdp_source = bi->rsdp_version == 2 ? "multiboot2 ACPI 2.0 tag" : "multiboot2 ACPI 1.0 tag";
            return r;
        }
        snprintk(info.problem, sizeof(info.problem), "the loader's ACPI tag holds no valid RSDP");
    }
    /* The BIOS data area lies at a fixed low address; hiding it from the
     * compiler keeps -Warray-bounds from treating it as a null-page access. */
    const volatile uint16_t *bda_ebda;
    __asm__("" : "=r"(bda_ebda) : "0"((uintptr_t)BDA_EBDA_SEGMENT));
    uint64_t ebda = (uint64_t)*bda_ebda << 4;
    const struct rsdp *r = 0;
    if (ebda >= 0x80000 && ebda < BIOS_AREA_START)
        r = rsdp_scan(ebda, ebda + EBDA_SCAN_BYTES);
    if (r) {
        info.rsdp_source = "EBDA";
    } else if ((r = rsdp_scan(BIOS_AREA_START, BIOS_AREA_END))) {
        info.rsdp_source = "BIOS area 0xe0000-0xfffff";
    }
    if (r)
        info.rsdp_address = (uint64_t)(uintptr_t)r;
    return r;
}

/* A table we may read: inside the identity map, with a sane length and a zero checksum. */
static const struct sdt_header *sdt_at(uint64_t pa)
{
    if (pa == 0 || pa + sizeof(struct sdt_header) > READABLE_LIMIT)
        return 0;
    const struct sdt_header *h = (const void *)(uintptr_t)pa;
    if (h->length < sizeof(*h) || pa + h->length > READABLE_LIMIT || h->length > (1u << 20))
        return 0;
    if (sum_bytes(h, h->length) != 0) {
        char sig[5] = { 0 };
        memcpy(sig, h->signature, 4);
        snprintk(info.problem, sizeof(info.problem), "table %s at %#llx has a bad checksum",
                 sig, (unsigned long long)pa);
        return 0;
    }
    return h;
}

static const struct sdt_header *sdt_find(const struct rsdp *r, const char sig[4])
{
    bool wide = r->revision >= 2 && r->xsdt;
    const struct sdt_header *root = sdt_at(wide ? r->xsdt : r->rsdt);
    if (!root)
        return 0;
    uint32_t width = wide ? 8 : 4;
    const uint8_t *p = (const uint8_t *)(root + 1);
    uint32_t n = (root->length - (uint32_t)sizeof(*root)) / width;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t pa = 0;
        memcpy(&pa, p + i * width, width);
        const struct sdt_header *h = sdt_at(pa);
        if (h && memcmp(h->signature, sig, 4) == 0)
            return h;
    }
    return 0;
}

static void cpu_add(uint32_t apic_id, uint32_t acpi_id, uint32_t flags)
{
    for (uint32_t i = 0; i < info.cpu_count && i < ACPI_CPUS_MAX; i++) {
        if (info.cpus[i].apic_id == apic_id)
            return;   /* an x2APIC entry repeating a LAPIC one */
    }
    if (info.cpu_count >= ACPI_CPUS_MAX) {
        info.cpus_dropped++;
        return;
    }
    info.cpus[info.cpu_count++] = (struct acpi_cpu){ apic_id, acpi_id, (flags & MADT_FLAG_ENABLED) != 0 };
}

static void madt_parse(const struct madt *m)
{
    info.madt_address = (uint64_t)(uintptr_t)m;
    info.lapic_address = m->lapic_address;
    const uint8_t *p = (const uint8_t *)(m + 1);
    const uint8_t *end = (const uint8_t *)m + m->h.length;
    while (p + 2 <= end && p[1] >= 2 && p + p[1] <= end) {
        uint32_t a = 0, b = 0, c = 0;
        switch (p[0]) {
        case MADT_LAPIC:          /* type, len, ACPI processor UID, APIC ID, flags(4) */
            memcpy(&a, p + 4, 4);
            cpu_add(p[3], p[2], a);
            break;
        case MADT_X2APIC:         /* type, len, reserved(2), x2APIC ID(4), flags(4), UID(4) */
            memcpy(&a, p + 4, 4);
            memcpy(&b, p + 8, 4);
            memcpy(&c, p + 12, 4);
            cpu_add(a, c, b);
            break;
        case MADT_IOAPIC:         /* type, len, IOAPIC ID, reserved, address(4), GSI base(4) */
            if (info.ioapic_count < ACPI_IOAPICS_MAX) {
                memcpy(&a, p + 4, 4);
                memcpy(&b, p + 8, 4);
                info.ioapics[info.ioapic_count++] = (struct acpi_ioapic){ p[2], a, b };
            }
            break;
        case MADT_LAPIC_OVERRIDE: /* type, len, reserved(2), 64-bit LAPIC address */
            memcpy(&info.lapic_address, p + 4, 8);
            break;
        default:
            break;
        }
        p += p[1];
    }
}

void acpi_init(void)
{
    memset(&info, 0, sizeof(info));
    info.rsdp_source = "none";
    const struct rsdp *r = rsdp_find();
    if (!r) {
        printk("taipan: no ACPI RSDP found (%s): one CPU\n",
               info.problem[0] ? info.problem : "no loader tag, nothing in the EBDA or BIOS area");
        return;
    }
    info.revision = r->revision;
    memcpy(info.oem_id, r->oem_id, 6);
    const struct sdt_header *madt = sdt_find(r, "APIC");
    if (!madt || madt->length < sizeof(struct madt)) {
        printk("taipan: ACPI (%s) has no usable MADT: one CPU\n", info.rsdp_source);
        return;
    }
    madt_parse((const struct madt *)madt);
}

const struct acpi_info *acpi_get(void)
{
    return &info;
}
