/* The partition's virtual IOAPIC (82093AA datasheet): 24 pins, the redirection table behind IOREGSEL/IOWIN, edge and level delivery to the vCPU's APIC. */
#include "partition.h"
#include "vlapic.h"

#define IOREGSEL 0x00
#define IOWIN 0x10
#define REG_ID 0x00
#define REG_VERSION 0x01
#define REG_ARBITRATION 0x02
#define REG_REDIR 0x10
/* Version 0x11 with 24 entries (maximum redirection entry 23 in bits 23:16). */
#define IOAPIC_VERSION (0x11u | (VIOAPIC_PINS - 1u) << 16)

#define RTE_VECTOR(r) ((uint8_t)(r))
#define RTE_MODE(r) (((r) >> 8) & 7)
#define RTE_LOGICAL (1ull << 11)
#define RTE_REMOTE_IRR (1ull << 14)
#define RTE_LEVEL (1ull << 15)
#define RTE_MASKED (1ull << 16)
#define RTE_DEST(r) ((uint32_t)((r) >> 56))
/* Vector, delivery mode, destination mode, polarity, trigger, mask and destination; status and remote IRR read-only. */
#define RTE_WRITABLE 0xff0000000001afffull
#define MODE_FIXED 0
#define MODE_LOWEST 1
#define MODE_NMI 4

void vioapic_reset(struct partition *p)
{
    p->ioapic = (struct vioapic){ 0 };
    for (unsigned i = 0; i < VIOAPIC_PINS; i++)
        p->ioapic.redir[i] = RTE_MASKED;
}

/* The pin's message to the APIC it names; a level-triggered one waits for the EOI (remote IRR). */
static void vioapic_deliver(struct partition *p, unsigned pin)
{
    uint64_t *rte = &p->ioapic.redir[pin];
    if (*rte & RTE_MASKED)
        return;
    if ((*rte & RTE_LEVEL) && (*rte & RTE_REMOTE_IRR))
        return;
    if (!vlapic_is_destination(&p->vcpu, *rte & RTE_LOGICAL, RTE_DEST(*rte)))
        return;
    uint32_t mode = RTE_MODE(*rte);
    if (mode == MODE_FIXED || mode == MODE_LOWEST) {
        vlapic_accept(&p->vcpu, RTE_VECTOR(*rte), *rte & RTE_LEVEL);
        if (*rte & RTE_LEVEL)
            *rte |= RTE_REMOTE_IRR;
    } else if (mode == MODE_NMI) {
        p->vcpu.lapic.nmi_pending = true;
    }
}

void vioapic_set_pin(struct partition *p, unsigned pin, bool level)
{
    uint32_t bit = 1u << pin;
    bool was = p->ioapic.levels & bit;
    if (level)
        p->ioapic.levels |= bit;
    else
        p->ioapic.levels &= ~bit;
    /* Edge: the rising edge. Level: as long as it is held, once per EOI. */
    if (level && (!was || (p->ioapic.redir[pin] & RTE_LEVEL)))
        vioapic_deliver(p, pin);
}

void vioapic_drive(struct partition *p, unsigned pin, enum vioapic_drive how)
{
    uint32_t bit = 1u << pin;
    __atomic_fetch_or(&p->lines.pins, bit, __ATOMIC_RELEASE);
    if (how == VIOAPIC_PULSE)
        __atomic_fetch_or(&p->lines.pulses, bit, __ATOMIC_RELEASE);
    else if (how == VIOAPIC_HIGH)
        __atomic_fetch_or(&p->lines.levels, bit, __ATOMIC_RELEASE);
    else
        __atomic_fetch_and(&p->lines.levels, ~bit, __ATOMIC_RELEASE);
}

void vioapic_poll_lines(struct partition *p)
{
    uint32_t pins = __atomic_load_n(&p->lines.pins, __ATOMIC_ACQUIRE);
    if (!pins)
        return;
    /* A pulse is one rising edge even when CPU 0 raised and lowered the line between two entries. */
    uint32_t pulses = __atomic_exchange_n(&p->lines.pulses, 0, __ATOMIC_ACQ_REL);
    uint32_t levels = __atomic_load_n(&p->lines.levels, __ATOMIC_ACQUIRE);
    for (unsigned pin = 0; pin < VIOAPIC_PINS; pin++) {
        uint32_t bit = 1u << pin;
        if (!(pins & bit))
            continue;
        if (pulses & bit)
            vioapic_set_pin(p, pin, true);
        vioapic_set_pin(p, pin, levels & bit);
    }
}

void vioapic_eoi(struct partition *p, uint8_t vector)
{
    for (unsigned pin = 0; pin < VIOAPIC_PINS; pin++) {
        uint64_t *rte = &p->ioapic.redir[pin];
        if ((*rte & RTE_LEVEL) && RTE_VECTOR(*rte) == vector && (*rte & RTE_REMOTE_IRR)) {
            *rte &= ~RTE_REMOTE_IRR;
            if (p->ioapic.levels & (1u << pin))
                vioapic_deliver(p, pin);
        }
    }
}

static uint32_t vioapic_read(const struct partition *p)
{
    uint32_t sel = p->ioapic.select & 0xff;
    if (sel == REG_ID || sel == REG_ARBITRATION)
        return p->ioapic.id;
    if (sel == REG_VERSION)
        return IOAPIC_VERSION;
    if (sel >= REG_REDIR && sel < REG_REDIR + 2 * VIOAPIC_PINS) {
        uint64_t rte = p->ioapic.redir[(sel - REG_REDIR) / 2];
        return (sel & 1) ? (uint32_t)(rte >> 32) : (uint32_t)rte;
    }
    return 0;
}

static void vioapic_write(struct partition *p, uint32_t value)
{
    uint32_t sel = p->ioapic.select & 0xff;
    if (sel == REG_ID) {
        p->ioapic.id = value & 0x0f000000u;
        return;
    }
    if (sel < REG_REDIR || sel >= REG_REDIR + 2 * VIOAPIC_PINS)
        return;   /* version and arbitration are read-only */
    unsigned pin = (sel - REG_REDIR) / 2;
    uint64_t *rte = &p->ioapic.redir[pin];
    uint64_t part = (sel & 1) ? (uint64_t)value << 32 : value;
    uint64_t keep = (sel & 1) ? 0xffffffffull : 0xffffffff00000000ull;
    *rte = (*rte & (keep | ~RTE_WRITABLE)) | (part & RTE_WRITABLE & ~keep);
    if (!(*rte & RTE_LEVEL))
        *rte &= ~RTE_REMOTE_IRR;
    /* Unmasked with its level held: a level-triggered pin fires now. */
    if ((*rte & RTE_LEVEL) && (p->ioapic.levels & (1u << pin)))
        vioapic_deliver(p, pin);
}

void vioapic_mmio(struct partition *p, uint32_t offset, bool write, uint32_t *value)
{
    switch (offset) {
    case IOREGSEL:
        if (write)
            p->ioapic.select = *value & 0xff;
        else
            *value = p->ioapic.select;
        break;
    case IOWIN:
        if (write)
            vioapic_write(p, *value);
        else
            *value = vioapic_read(p);
        break;
    default:
        if (!write)
            *value = 0;
        break;
    }
}
