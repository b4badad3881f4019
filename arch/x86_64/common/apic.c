/* Each CPU's local xAPIC: enabling it, its one-shot timer, EOI, and the IPIs that start and kick other CPUs. */
#include <stdbool.h>
#include <stdint.h>
#include "apic.h"
#include "cpu.h"
#include "io.h"
#include "printk.h"
#include "tsc.h"

#define MSR_APIC_BASE        0x1b
#define APIC_BASE_ENABLE     (1ull << 11)
#define APIC_BASE_X2APIC     (1ull << 10)
#define APIC_BASE_ADDR_MASK  0x000ffffffffff000ull
/* The xAPIC page's architectural default; svm/entry.py's EOI stub assumes it. */
#define XAPIC_DEFAULT_BASE   0xfee00000ull

/* xAPIC register offsets (Intel SDM vol. 3, table 11-1; AMD APM vol. 2, table 16-2). */
#define APIC_ID         0x020
#define APIC_TPR        0x080
#define APIC_EOI        0x0b0
#define APIC_ICR_LOW    0x300
#define APIC_ICR_HIGH   0x310
#define APIC_SVR        0x0f0
#define APIC_IRR        0x200
#define APIC_LVT_TIMER  0x320
#define APIC_LVT_LINT0  0x350
#define APIC_LVT_ERROR  0x370
#define APIC_TMICT      0x380
#define APIC_TMCCT      0x390
#define APIC_TDCR       0x3e0

#define SVR_APIC_ENABLE (1u << 8)
/* ICR delivery modes and flags (SDM vol. 3, 11.6.1). */
#define ICR_FIXED       (0u << 8)
#define ICR_INIT        (5u << 8)
#define ICR_STARTUP     (6u << 8)
#define ICR_PENDING     (1u << 12)
#define ICR_ASSERT      (1u << 14)
#define LVT_MASKED      (1u << 16)
/* Divide configuration 0b0011: the timer counts at the bus clock / 16, which
 * gives a count of 2^32 a range of tens of seconds at GHz bus rates. */
#define TDCR_DIVIDE_16  0x3u
#define CALIBRATE_MS    10u

/* The 8259 PICs' interrupt mask registers. */
#define PIC1_DATA 0x21
#define PIC2_DATA 0xa1

static uint64_t timer_khz;
static uint8_t timer_vector;

static inline uint32_t apic_read(uint32_t reg)
{
    return *(volatile uint32_t *)(uintptr_t)(XAPIC_DEFAULT_BASE + reg);
}

static inline void apic_write(uint32_t reg, uint32_t value)
{
    *(volatile uint32_t *)(uintptr_t)(XAPIC_DEFAULT_BASE + reg) = value;
}

/* Count timer ticks across CALIBRATE_MS of TSC time, with the timer masked. */
static uint64_t apic_timer_measure_khz(void)
{
    uint64_t tsc_window = tsc_khz() * CALIBRATE_MS;

    apic_write(APIC_LVT_TIMER, LVT_MASKED | timer_vector);
    apic_write(APIC_TDCR, TDCR_DIVIDE_16);
    uint64_t start = tsc_read();
    apic_write(APIC_TMICT, 0xffffffffu);
    uint64_t now;
    while ((now = tsc_read()) - start < tsc_window)
        ;
    uint32_t left = apic_read(APIC_TMCCT);
    apic_write(APIC_TMICT, 0);
    uint64_t ticks = 0xffffffffull - left;
    /* ticks per TSC tick times TSC kHz: the timer's own rate. */
    return ticks * tsc_khz() / (now - start);
}

int apic_local_init(uint8_t vector, uint8_t spurious_vector)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    if (base & APIC_BASE_X2APIC) {
        printk("apic: the local APIC is in x2APIC mode; Taipan drives the xAPIC page\n");
        return -1;
    }
    if ((base & APIC_BASE_ADDR_MASK) != XAPIC_DEFAULT_BASE) {
        printk("apic: the local APIC is at 0x%llx, not at 0x%llx\n",
               (unsigned long long)(base & APIC_BASE_ADDR_MASK), XAPIC_DEFAULT_BASE);
        return -1;
    }
    if (!(base & APIC_BASE_ENABLE))
        wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE);

    /*
     * The firmware leaves the PIT's IRQ 0 running through the 8259 on vector
     * 8 (#DF's); the host takes only its own vectors, so the PICs and the
     * APIC's virtual-wire input LINT0 are masked.
     */
    outb(PIC1_DATA, 0xff);
    outb(PIC2_DATA, 0xff);
    apic_write(APIC_LVT_LINT0, LVT_MASKED);
    apic_write(APIC_LVT_ERROR, LVT_MASKED);
    apic_write(APIC_TPR, 0);
    apic_write(APIC_SVR, SVR_APIC_ENABLE | spurious_vector);

    timer_vector = vector;
    /* Every CPU's timer runs off the same bus clock: the boot CPU measures it once. */
    if (timer_khz == 0)
        timer_khz = apic_timer_measure_khz();
    if (timer_khz == 0) {
        printk("apic: the local APIC timer does not count\n");
        return -1;
    }
    /* One-shot mode (LVT bits 18:17 = 0), unmasked; idle until armed. */
    apic_write(APIC_TDCR, TDCR_DIVIDE_16);
    apic_write(APIC_LVT_TIMER, vector);
    return 0;
}

uint32_t apic_id(void)
{
    return apic_read(APIC_ID) >> 24;
}

void apic_eoi(void)
{
    apic_write(APIC_EOI, 0);
}

static void apic_icr(uint32_t dest, uint32_t low)
{
    while (apic_read(APIC_ICR_LOW) & ICR_PENDING)
        __asm__ volatile("pause");
    apic_write(APIC_ICR_HIGH, dest << 24);
    apic_write(APIC_ICR_LOW, low);
}

void apic_send_ipi(uint32_t dest, uint8_t vector)
{
    apic_icr(dest, ICR_FIXED | ICR_ASSERT | vector);
}

void apic_send_init(uint32_t dest)
{
    apic_icr(dest, ICR_INIT | ICR_ASSERT);
}

void apic_send_startup(uint32_t dest, uint8_t page)
{
    apic_icr(dest, ICR_STARTUP | ICR_ASSERT | page);
}

void apic_timer_arm(uint64_t tsc_ticks)
{
    uint64_t khz = tsc_khz();
    uint64_t count;

    if (tsc_ticks > UINT64_MAX / timer_khz)
        count = 0xffffffffu;
    else
        count = tsc_ticks * timer_khz / khz;
    if (count == 0)
        count = 1;   /* an initial count of 0 stops the timer instead */
    if (count > 0xffffffffu)
        count = 0xffffffffu;
    apic_write(APIC_TMICT, (uint32_t)count);
}

static bool apic_timer_pending(void)
{
    return apic_read(APIC_IRR + (timer_vector / 32u) * 0x10u) & (1u << (timer_vector % 32u));
}

void apic_timer_stop(void)
{
    /* Writing 0 to the initial count stops a one-shot timer that has not fired. */
    apic_write(APIC_TMICT, 0);
}

void apic_timer_drain(void)
{
    apic_timer_stop();
    /*
     * One that has fired is held in IRR while IF=0 (and GIF=0 before that):
     * open the window for it. STI's shadow covers the next instruction, so
     * the NOP gives the interrupt its instruction boundary.
     */
    for (int tries = 0; tries < 4; tries++) {
        __asm__ volatile("sti; nop; cli" ::: "memory");
        if (!apic_timer_pending())
            return;
    }
}

uint64_t apic_timer_khz(void)
{
    return timer_khz;
}
