/* The virtual local APIC of a vCPU: xAPIC and x2APIC registers, IRR/ISR/TMR and priorities, the timer in its three modes, self-IPIs (Intel SDM vol. 3A, ch. 11). */
#include "libc.h"
#include "partition.h"
#include "tsc.h"
#include "vcpu_state.h"
#include "vlapic.h"

#define APIC_BASE_EXTD (1ull << 10)
#define APIC_BASE_EN (1ull << 11)

/* Register offsets in the xAPIC page; x2APIC MSR = 0x800 + offset / 16. */
#define REG_ID 0x20
#define REG_VERSION 0x30
#define REG_TPR 0x80
#define REG_APR 0x90
#define REG_PPR 0xa0
#define REG_EOI 0xb0
#define REG_LDR 0xd0
#define REG_DFR 0xe0
#define REG_SVR 0xf0
#define REG_ISR 0x100
#define REG_TMR 0x180
#define REG_IRR 0x200
#define REG_ESR 0x280
#define REG_ICR_LO 0x300
#define REG_ICR_HI 0x310
#define REG_LVT_TIMER 0x320
#define REG_LVT_ERROR 0x370
#define REG_TIMER_INITIAL 0x380
#define REG_TIMER_CURRENT 0x390
#define REG_TIMER_DIVIDE 0x3e0
#define REG_SELF_IPI 0x3f0

/* Version 0x14 (an integrated APIC), LVT entries 0-5: timer, thermal, performance, LINT0, LINT1, error. */
#define APIC_VERSION (0x14u | (VLAPIC_LVT_COUNT - 1u) << 16)
#define SVR_ENABLE (1u << 8)
#define SVR_WRITABLE 0x1ffu          /* vector and APIC software enable; no EOI-broadcast suppression offered */
#define LVT_MASKED (1u << 16)
#define LVT_LEVEL (1u << 15)
#define LVT_TIMER_MODE(l) (((l) >> 17) & 3)
#define TIMER_ONESHOT 0
#define TIMER_PERIODIC 1
#define TIMER_TSC_DEADLINE 2
#define LVT_TIMER 0
#define LVT_ERROR 5
/* Writable bits of each LVT entry, in register order (table 11-... "Local Vector Table"). */
static const uint32_t lvt_writable[VLAPIC_LVT_COUNT] = {
    0x700ffu,   /* timer: vector, mask, mode (one-shot, periodic, TSC-deadline) */
    0x107ffu,   /* thermal: vector, delivery mode, mask */
    0x107ffu,   /* performance counters */
    0x1a7ffu,   /* LINT0: vector, delivery mode, polarity, trigger, mask */
    0x1a7ffu,   /* LINT1 */
    0x100ffu,   /* error: vector, mask */
};
/* ICR (figure 11-12). */
#define ICR_VECTOR(i) ((uint8_t)(i))
#define ICR_MODE(i) (((i) >> 8) & 7)
#define ICR_LOGICAL (1u << 11)
#define ICR_SHORTHAND(i) (((i) >> 18) & 3)
#define ICR_MODE_FIXED 0
#define ICR_MODE_LOWEST 1
#define ICR_MODE_NMI 4
#define ICR_WRITABLE 0xccfffu        /* vector, mode, dest mode, level, trigger, shorthand; delivery status reads 0 */
#define SHORTHAND_NONE 0
#define SHORTHAND_SELF 1
#define SHORTHAND_ALL 2
/* ESR bits (figure 11-9). */
#define ESR_SEND_ILLEGAL_VECTOR (1u << 5)
#define ESR_RECEIVE_ILLEGAL_VECTOR (1u << 6)
#define ESR_ILLEGAL_REGISTER (1u << 7)

static bool x2apic(const struct vcpu *v)
{
    return (v->msrs.apic_base & (APIC_BASE_EN | APIC_BASE_EXTD)) == (APIC_BASE_EN | APIC_BASE_EXTD);
}

static bool xapic(const struct vcpu *v)
{
    return (v->msrs.apic_base & (APIC_BASE_EN | APIC_BASE_EXTD)) == APIC_BASE_EN;
}

static bool bit_test(const uint32_t *bits, uint8_t n) { return bits[n / 32] & (1u << (n % 32)); }
static void bit_set(uint32_t *bits, uint8_t n) { bits[n / 32] |= 1u << (n % 32); }
static void bit_clear(uint32_t *bits, uint8_t n) { bits[n / 32] &= ~(1u << (n % 32)); }

/* The highest vector set in a 256-bit register, or -1. */
static int highest(const uint32_t *bits)
{
    for (int w = 7; w >= 0; w--)
        if (bits[w])
            return w * 32 + 31 - __builtin_clz(bits[w]);
    return -1;
}

/* PPR: the TPR, or the class of the highest in-service vector if that is higher (11.8.3.1). */
static uint32_t ppr(const struct vlapic *a)
{
    int isrv = highest(a->isr);
    uint32_t isr_class = isrv < 0 ? 0 : (uint32_t)isrv & 0xf0;
    return (a->tpr & 0xf0) >= isr_class ? a->tpr & 0xff : isr_class;
}

static uint32_t x2apic_ldr(uint32_t id)
{
    return (id >> 4) << 16 | 1u << (id & 0xf);
}

void vlapic_reset(struct vcpu *v)
{
    struct vlapic *a = &v->lapic;
    *a = (struct vlapic){ .dfr = 0xffffffffu, .svr = 0xff };
    for (unsigned i = 0; i < VLAPIC_LVT_COUNT; i++)
        a->lvt[i] = LVT_MASKED;
    /* One vCPU per partition: APIC ID 0, as CPUID's initial APIC ID says. */
    a->id = 0;
    if (x2apic(v))
        a->ldr = x2apic_ldr(a->id);
}

void vlapic_base_changed(struct vcpu *v, uint64_t old, uint64_t value)
{
    if (!(old & APIC_BASE_EN) && (value & APIC_BASE_EN))
        vlapic_reset(v);   /* enabled again: the power-up state (11.4.3) */
    else if (!(value & APIC_BASE_EN))
        v->lapic.deadline = 0;
    if (!(old & APIC_BASE_EXTD) && (value & APIC_BASE_EXTD))
        v->lapic.ldr = x2apic_ldr(v->lapic.id);   /* x2APIC derives the logical ID (11.12.10.2) */
}

/* The timer's divide configuration register as a divisor (figure 11-10): 1 to 128. */
static uint64_t timer_divisor(const struct vlapic *a)
{
    uint32_t code = (a->timer_divide & 3) | ((a->timer_divide >> 1) & 4);
    return code == 7 ? 1 : 2ull << code;
}

/*
 * The timer counts down at the TSC's rate over the divisor: one count is
 * `divisor` host TSC ticks, so a deadline is a host TSC value and the run
 * loop ends a slice exactly there.
 */
static void timer_start(struct vlapic *a, uint64_t now)
{
    a->timer_start = now;
    a->deadline = a->timer_initial ? now + (uint64_t)a->timer_initial * timer_divisor(a) : 0;
}

static uint32_t timer_current(const struct vlapic *a, uint64_t now)
{
    if (!a->deadline || LVT_TIMER_MODE(a->lvt[LVT_TIMER]) == TIMER_TSC_DEADLINE || now >= a->deadline)
        return 0;
    return (uint32_t)((a->deadline - now + timer_divisor(a) - 1) / timer_divisor(a));
}

/* IA32_TSC_DEADLINE in the guest's TSC to a host TSC deadline (a past one fires at once). */
static void timer_tsc_deadline(struct vcpu *v, uint64_t guest_deadline)
{
    struct vlapic *a = &v->lapic;
    a->tsc_deadline = guest_deadline;
    if (!guest_deadline || LVT_TIMER_MODE(a->lvt[LVT_TIMER]) != TIMER_TSC_DEADLINE) {
        a->deadline = 0;
        return;
    }
    uint64_t offset = partition_backend()->reg_get(v, VREG_TSC_OFFSET);
    uint64_t host = guest_deadline - offset;
    uint64_t now = tsc_read();
    /* A deadline already behind the guest's TSC (or wrapped) fires now. */
    a->deadline = (int64_t)(host - now) <= 0 ? now : host;
}

void vlapic_accept(struct vcpu *v, uint8_t vector, bool level)
{
    struct vlapic *a = &v->lapic;
    if (vector < 16) {
        a->esr |= ESR_RECEIVE_ILLEGAL_VECTOR;
        return;
    }
    bit_set(a->irr, vector);
    if (level)
        bit_set(a->tmr, vector);
    else
        bit_clear(a->tmr, vector);
}

/* An LVT entry fires: its vector, unless masked or the APIC is software-disabled. */
static void lvt_fire(struct vcpu *v, unsigned lvt)
{
    uint32_t entry = v->lapic.lvt[lvt];
    if ((entry & LVT_MASKED) || !(v->lapic.svr & SVR_ENABLE))
        return;
    vlapic_accept(v, (uint8_t)entry, false);
}

void vlapic_timer_poll(struct vcpu *v, uint64_t now)
{
    struct vlapic *a = &v->lapic;
    if (!a->deadline || now < a->deadline)
        return;
    uint32_t mode = LVT_TIMER_MODE(a->lvt[LVT_TIMER]);
    lvt_fire(v, LVT_TIMER);
    if (mode == TIMER_PERIODIC && a->timer_initial) {
        /* Periods missed while the vCPU did not run merge into the one
         * interrupt already in IRR, as they would on the hardware. */
        uint64_t period = (uint64_t)a->timer_initial * timer_divisor(a);
        a->timer_start = a->deadline;
        a->deadline += period;
        if (a->deadline <= now) {
            a->timer_start = now;
            a->deadline = now + period;
        }
    } else {
        a->deadline = 0;
        if (mode == TIMER_TSC_DEADLINE)
            a->tsc_deadline = 0;   /* the MSR reads 0 once it fired (11.5.4.1) */
    }
}

uint64_t vlapic_deadline(const struct vcpu *v)
{
    return (v->msrs.apic_base & APIC_BASE_EN) ? v->lapic.deadline : 0;
}

int vlapic_pending(const struct vcpu *v)
{
    const struct vlapic *a = &v->lapic;
    if (!(v->msrs.apic_base & APIC_BASE_EN))
        return -1;
    int irrv = highest(a->irr);
    if (irrv < 0 || ((uint32_t)irrv & 0xf0) <= (ppr(a) & 0xf0))
        return -1;
    return irrv;
}

void vlapic_ack(struct vcpu *v, uint8_t vector)
{
    bit_clear(v->lapic.irr, vector);
    bit_set(v->lapic.isr, vector);
    v->part->interrupts++;
}

static void vlapic_eoi(struct vcpu *v)
{
    struct vlapic *a = &v->lapic;
    int isrv = highest(a->isr);
    if (isrv < 0)
        return;
    bit_clear(a->isr, (uint8_t)isrv);
    if (bit_test(a->tmr, (uint8_t)isrv))
        vioapic_eoi(v->part, (uint8_t)isrv);
}

bool vlapic_is_destination(const struct vcpu *v, bool logical, uint32_t dest)
{
    const struct vlapic *a = &v->lapic;
    bool x2 = x2apic(v);
    if (!logical)
        return dest == a->id || dest == (x2 ? 0xffffffffu : 0xffu);
    if (x2)
        return dest == 0xffffffffu || ((dest >> 16) == (a->ldr >> 16) && (dest & a->ldr & 0xffff));
    uint32_t mine = a->ldr >> 24;
    if ((a->dfr >> 28) == 0xf)
        return (dest & mine) != 0;   /* flat model */
    return (dest >> 4) == (mine >> 4) && (dest & mine & 0xf);   /* cluster model */
}

/*
 * An IPI: a partition has one vCPU, so only this APIC can be its target;
 * nothing ever leaves the partition. INIT, SIPI and SMI to itself have no
 * effect a single-vCPU partition could use, and are dropped.
 */
static void vlapic_ipi(struct vcpu *v, uint32_t icr, uint32_t dest)
{
    uint32_t shorthand = ICR_SHORTHAND(icr);
    bool mine = shorthand == SHORTHAND_SELF || shorthand == SHORTHAND_ALL ||
                (shorthand == SHORTHAND_NONE && vlapic_is_destination(v, icr & ICR_LOGICAL, dest));
    uint32_t mode = ICR_MODE(icr);
    if ((mode == ICR_MODE_FIXED || mode == ICR_MODE_LOWEST) && ICR_VECTOR(icr) < 16) {
        v->lapic.esr |= ESR_SEND_ILLEGAL_VECTOR;
        return;
    }
    if (!mine)
        return;
    if (mode == ICR_MODE_FIXED || mode == ICR_MODE_LOWEST)
        vlapic_accept(v, ICR_VECTOR(icr), false);
    else if (mode == ICR_MODE_NMI)
        v->lapic.nmi_pending = true;
}

/* One register read by its xAPIC offset; false for one that does not exist in the current mode. */
static bool reg_read(struct vcpu *v, uint32_t off, uint32_t *out)
{
    struct vlapic *a = &v->lapic;
    bool x2 = x2apic(v);
    switch (off) {
    case REG_ID: *out = x2 ? a->id : a->id << 24; return true;
    case REG_VERSION: *out = APIC_VERSION; return true;
    case REG_TPR: *out = a->tpr; return true;
    case REG_APR: *out = 0; return !x2;
    case REG_PPR: *out = ppr(a); return true;
    case REG_LDR: *out = a->ldr; return true;
    case REG_DFR: *out = a->dfr; return !x2;
    case REG_SVR: *out = a->svr; return true;
    case REG_ESR: *out = a->esr; return true;
    case REG_ICR_LO: *out = a->icr_lo; return true;   /* delivery status always idle: IPIs arrive at once */
    case REG_ICR_HI: *out = a->icr_hi; return !x2;
    case REG_TIMER_INITIAL: *out = a->timer_initial; return true;
    case REG_TIMER_CURRENT: *out = timer_current(a, tsc_read()); return true;
    case REG_TIMER_DIVIDE: *out = a->timer_divide; return true;
    default: break;
    }
    if (off >= REG_ISR && off < REG_ISR + 0x80) {
        *out = a->isr[(off - REG_ISR) >> 4];
        return true;
    }
    if (off >= REG_TMR && off < REG_TMR + 0x80) {
        *out = a->tmr[(off - REG_TMR) >> 4];
        return true;
    }
    if (off >= REG_IRR && off < REG_IRR + 0x80) {
        *out = a->irr[(off - REG_IRR) >> 4];
        return true;
    }
    if (off >= REG_LVT_TIMER && off <= REG_LVT_ERROR) {
        *out = a->lvt[(off - REG_LVT_TIMER) >> 4];
        return true;
    }
    return false;
}

/* The timer's LVT entry, initial count or divisor changed (11.5.4): a mode change disarms it. */
static void timer_lvt_write(struct vcpu *v, uint32_t value)
{
    struct vlapic *a = &v->lapic;
    uint32_t old_mode = LVT_TIMER_MODE(a->lvt[LVT_TIMER]);
    a->lvt[LVT_TIMER] = value;
    if (LVT_TIMER_MODE(value) != old_mode) {
        a->deadline = 0;
        a->timer_initial = 0;
        a->tsc_deadline = 0;
    }
}

/* One register write by its xAPIC offset; false for one that is read-only or absent in the current mode. */
static bool reg_write(struct vcpu *v, uint32_t off, uint32_t value)
{
    struct vlapic *a = &v->lapic;
    bool x2 = x2apic(v);
    switch (off) {
    case REG_TPR:
        a->tpr = value & 0xff;
        return true;
    case REG_EOI:
        vlapic_eoi(v);
        return true;
    case REG_LDR:
        if (x2)
            return false;   /* x2APIC's logical ID is derived from its ID */
        a->ldr = value & 0xff000000u;
        return true;
    case REG_DFR:
        if (x2)
            return false;
        a->dfr = value | 0x0fffffffu;
        return true;
    case REG_SVR:
        a->svr = value & SVR_WRITABLE;
        if (!(a->svr & SVR_ENABLE))
            for (unsigned i = 0; i < VLAPIC_LVT_COUNT; i++)
                a->lvt[i] |= LVT_MASKED;   /* software-disabled: every LVT entry masked (11.4.7.2) */
        return true;
    case REG_ESR:
        a->esr = 0;
        return true;
    case REG_ICR_LO:
        a->icr_lo = value & ICR_WRITABLE;
        vlapic_ipi(v, a->icr_lo, x2 ? 0 : a->icr_hi >> 24);
        return true;
    case REG_ICR_HI:
        if (x2)
            return false;
        a->icr_hi = value & 0xff000000u;
        return true;
    case REG_TIMER_INITIAL:
        if (LVT_TIMER_MODE(a->lvt[LVT_TIMER]) == TIMER_TSC_DEADLINE)
            return true;   /* ignored in TSC-deadline mode */
        a->timer_initial = value;
        timer_start(a, tsc_read());
        return true;
    case REG_TIMER_DIVIDE:
        a->timer_divide = value & 0xb;
        return true;
    case REG_SELF_IPI:
        if (!x2)
            return false;
        vlapic_accept(v, (uint8_t)value, false);
        return true;
    default:
        break;
    }
    if (off >= REG_LVT_TIMER && off <= REG_LVT_ERROR && !(off & 0xf)) {
        unsigned i = (off - REG_LVT_TIMER) >> 4;
        value &= lvt_writable[i];
        if (!(a->svr & SVR_ENABLE))
            value |= LVT_MASKED;
        if (i == LVT_TIMER)
            timer_lvt_write(v, value);
        else
            a->lvt[i] = value;
        return true;
    }
    return false;
}

bool vlapic_msr_read(struct vcpu *v, uint32_t msr, uint64_t *value)
{
    if (msr == MSR_TSC_DEADLINE) {
        *value = v->lapic.tsc_deadline;
        return true;
    }
    /* The x2APIC registers exist only in x2APIC mode (11.12.1). */
    if (!x2apic(v) || msr < VLAPIC_X2APIC_FIRST || msr > VLAPIC_X2APIC_LAST)
        return false;
    uint32_t off = (msr - VLAPIC_X2APIC_FIRST) << 4;
    if (off == REG_ICR_LO) {
        *value = (uint64_t)v->lapic.icr_hi << 32 | v->lapic.icr_lo;
        return true;
    }
    if (off == REG_EOI || off == REG_SELF_IPI)
        return false;   /* write-only */
    uint32_t x = 0;
    if (!reg_read(v, off, &x))
        return false;
    *value = x;
    return true;
}

bool vlapic_msr_write(struct vcpu *v, uint32_t msr, uint64_t value)
{
    if (msr == MSR_TSC_DEADLINE) {
        timer_tsc_deadline(v, value);
        return true;
    }
    if (!x2apic(v) || msr < VLAPIC_X2APIC_FIRST || msr > VLAPIC_X2APIC_LAST)
        return false;
    uint32_t off = (msr - VLAPIC_X2APIC_FIRST) << 4;
    if (off == REG_ICR_LO) {
        /* x2APIC's ICR is one 64-bit register: the destination in 63:32. */
        if (value & 0xfff33000ull)
            return false;
        v->lapic.icr_hi = (uint32_t)(value >> 32);
        v->lapic.icr_lo = (uint32_t)value & ICR_WRITABLE;
        vlapic_ipi(v, v->lapic.icr_lo, v->lapic.icr_hi);
        return true;
    }
    /* Every other x2APIC register is 32 bits: bits 63:32 are reserved, as are
     * a nonzero EOI, a self-IPI's bits above the vector and reads-only. */
    if (value >> 32)
        return false;
    if ((off == REG_EOI && value) || (off == REG_SELF_IPI && value > 0xff) || (off == REG_ESR && value))
        return false;
    return reg_write(v, off, (uint32_t)value);
}

bool vlapic_mmio_owns(const struct vcpu *v, uint64_t gpa)
{
    return xapic(v) && (gpa & ~0xfffull) == (v->msrs.apic_base & ~0xfffull);
}

bool vlapic_mmio(struct vcpu *v, uint32_t offset, bool write, uint32_t *value)
{
    if (!xapic(v))
        return false;
    /* Registers are 16-byte aligned; the xAPIC answers only their first dword. */
    uint32_t off = offset & 0xff0;
    if (offset & 0xf) {
        if (!write)
            *value = 0;
        return true;
    }
    if (write) {
        if (!reg_write(v, off, *value) && off != REG_ID && off != REG_VERSION)
            v->lapic.esr |= ESR_ILLEGAL_REGISTER;
    } else if (!reg_read(v, off, value)) {
        *value = 0;
        if (off != REG_EOI)
            v->lapic.esr |= ESR_ILLEGAL_REGISTER;
    }
    return true;
}
