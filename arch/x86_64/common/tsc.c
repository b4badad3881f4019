/* The time-stamp counter as a clock: its rate taken from CPUID where a leaf reports it, else measured against the PIT. */
#include <stdint.h>
#include "cpu.h"
#include "io.h"
#include "tsc.h"

/*
 * Every PC has the 8254 PIT at 1.193182 MHz, and channel 2 can be gated and
 * polled without interrupts: count TSC ticks across a known number of PIT
 * ticks. CPUID leaves give an exact figure where the CPU (or the hypervisor
 * beneath us) reports one, so they are preferred; but an emulator may copy a
 * real model's leaves while its TSC runs at another rate, so a CPUID figure
 * that the PIT contradicts by more than CPUID_TOLERANCE_PCT is not used.
 */
#define PIT_HZ              1193182u
#define PIT_CH2             0x42
#define PIT_CMD             0x43
#define PORT_B              0x61
#define CALIBRATE_MS        10u
#define PIT_TICKS           ((uint16_t)(PIT_HZ * CALIBRATE_MS / 1000u))
/* Counts until one is known to within PIT_GOOD_PPM, or the narrowest of
 * PIT_SAMPLES_MAX. A host that deschedules an emulator's vCPU at the start
 * or end of a count (seen here: 37% too fast under load) spoils that count
 * only, and its wide window shows it. */
#define PIT_SAMPLES_MAX     25u
#define PIT_GOOD_PPM        500u
#define CPUID_TOLERANCE_PCT 25u
#define ASSUMED_KHZ         1000000u

#define HV_LEAF_BASE        0x40000000u
#define HV_LEAF_TIMING      0x40000010u

/* Until tsc_calibrate runs, conversions use the assumed rate rather than divide by zero. */
static struct tsc_calibration cal = { .khz = ASSUMED_KHZ };

/*
 * One count of PIT_TICKS. The count starts with the write of its high byte
 * and ends when OUT2 rises. Both moments are known only to within the TSC
 * reads around them (an emulator's vCPU can be descheduled between a port
 * access and the next RDTSC), so the sample keeps that uncertainty: the sum
 * of the two windows' widths.
 */
struct pit_sample {
    uint64_t ticks;    /* TSC ticks between the windows' midpoints */
    uint64_t window;   /* how far off that can be */
};

static int tsc_pit_sample(struct pit_sample *s)
{
    /* Gate channel 2 on, speaker off; mode 0 drives OUT2 low, then high when the count ends. */
    outb(PORT_B, (uint8_t)((inb(PORT_B) & ~0x02) | 0x01));
    outb(PIT_CMD, 0xB0);
    outb(PIT_CH2, (uint8_t)(PIT_TICKS & 0xff));
    uint64_t start_lo = tsc_read();
    outb(PIT_CH2, (uint8_t)(PIT_TICKS >> 8));
    uint64_t start_hi = tsc_read();
    /* OUT2 rose after the last poll that read it low began, and before the first that read it high ended. */
    uint64_t low_at = start_lo;
    for (uint32_t spins = 0; spins < 0x4000000u; spins++) {
        uint64_t before = tsc_read();
        uint8_t v = inb(PORT_B);
        uint64_t after = tsc_read();
        if (v & 0x20) {
            s->ticks = (low_at + after) / 2 - (start_lo + start_hi) / 2;
            s->window = (after - low_at) + (start_hi - start_lo);
            return 1;
        }
        low_at = before;
    }
    return 0;   /* no PIT answering */
}

/* The PIT's figure in kHz (0 if the PIT never answered); *error_ppm how far off it can be. */
static uint64_t tsc_measure_pit_khz(uint32_t *error_ppm)
{
    struct pit_sample best = { 0, UINT64_MAX }, s;
    for (unsigned int i = 0; i < PIT_SAMPLES_MAX; i++) {
        if (!tsc_pit_sample(&s)) {
            return 0;
        }
        if (s.window < best.window) {
            best = s;
        }
        if (best.window / 2 * 1000000u <= best.ticks * PIT_GOOD_PPM) {
            break;
        }
    }
    if (best.ticks == 0) {
        return 0;
    }
    *error_ppm = (uint32_t)(best.window / 2 * 1000000u / best.ticks);
    return best.ticks * PIT_HZ / ((uint64_t)PIT_TICKS * 1000u);
}

/* The TSC rate a CPUID leaf reports, 0 if none does; *leaf says which. */
static uint64_t tsc_cpuid_khz(enum tsc_source *leaf)
{
    const struct cpu_info *ci = cpu_info_get();
    uint32_t a, b, c, d;

    /* A hypervisor's timing leaf (VMware's convention, also KVM's and Taipan's own) is the rate it gives us. */
    if (ci->hypervisor_present) {
        cpuid(HV_LEAF_BASE, 0, &a, &b, &c, &d);
        if (a >= HV_LEAF_TIMING && a < HV_LEAF_BASE + 0x10000u) {
            cpuid(HV_LEAF_TIMING, 0, &a, &b, &c, &d);
            if (a != 0) {
                *leaf = TSC_SOURCE_HV_LEAF;
                return a;
            }
        }
    }
    /* 0x15: TSC = crystal (ECX, Hz) * EBX / EAX; many CPUs leave ECX 0. */
    if (ci->max_leaf >= 0x15) {
        cpuid(0x15, 0, &a, &b, &c, &d);
        if (a != 0 && b != 0 && c != 0) {
            *leaf = TSC_SOURCE_CPUID_15;
            return (uint64_t)c * b / a / 1000u;
        }
    }
    /* 0x16: the base frequency in MHz, which is the TSC's nominal rate on CPUs with an invariant TSC. */
    if (ci->max_leaf >= 0x16) {
        cpuid(0x16, 0, &a, &b, &c, &d);
        if ((a & 0xffff) != 0) {
            *leaf = TSC_SOURCE_CPUID_16;
            return (uint64_t)(a & 0xffff) * 1000u;
        }
    }
    return 0;
}

static int tsc_agrees(uint64_t reported, uint64_t measured)
{
    uint64_t diff = reported > measured ? reported - measured : measured - reported;
    return diff * 100u <= measured * CPUID_TOLERANCE_PCT;
}

void tsc_calibrate(void)
{
    cal.pit_khz = tsc_measure_pit_khz(&cal.pit_error_ppm);
    cal.cpuid_leaf = TSC_SOURCE_ASSUMED;
    cal.cpuid_khz = tsc_cpuid_khz(&cal.cpuid_leaf);
    if (cal.cpuid_khz != 0 && (cal.pit_khz == 0 || tsc_agrees(cal.cpuid_khz, cal.pit_khz))) {
        cal.khz = cal.cpuid_khz;
        cal.source = cal.cpuid_leaf;
    } else if (cal.pit_khz != 0) {
        cal.khz = cal.pit_khz;
        cal.source = TSC_SOURCE_PIT;
    } else {
        cal.khz = ASSUMED_KHZ;
        cal.source = TSC_SOURCE_ASSUMED;
    }
}

uint64_t tsc_khz(void)
{
    return cal.khz;
}

const struct tsc_calibration *tsc_calibration_get(void)
{
    return &cal;
}

const char *tsc_source_name(enum tsc_source source)
{
    switch (source) {
    case TSC_SOURCE_PIT: return "PIT";
    case TSC_SOURCE_CPUID_15: return "CPUID 0x15";
    case TSC_SOURCE_CPUID_16: return "CPUID 0x16";
    case TSC_SOURCE_HV_LEAF: return "CPUID 0x40000010";
    case TSC_SOURCE_ASSUMED: break;
    }
    return "assumed";
}

/* Split at whole milliseconds so the multiplication cannot overflow 64 bits. */
uint64_t tsc_to_us(uint64_t ticks)
{
    return ticks / cal.khz * 1000u + ticks % cal.khz * 1000u / cal.khz;
}

uint64_t tsc_to_ns(uint64_t ticks)
{
    return ticks / cal.khz * 1000000u + ticks % cal.khz * 1000000u / cal.khz;
}

uint64_t tsc_from_us(uint64_t us)
{
    return us / 1000u * cal.khz + us % 1000u * cal.khz / 1000u;
}
