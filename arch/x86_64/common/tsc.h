/* The time-stamp counter as a clock: reading it, its rate, and where that rate came from. */
#pragma once
#include <stdint.h>

static inline uint64_t tsc_read(void)
{
    uint32_t lo, hi;
    __asm__ volatile ("rdtsc" : "=a" (lo), "=d" (hi));
    return ((uint64_t)hi << 32) | lo;
}

/* Where the rate in use came from. */
enum tsc_source {
    TSC_SOURCE_ASSUMED,   /* nothing answered: 1 GHz assumed so time still advances */
    TSC_SOURCE_PIT,       /* measured against PIT channel 2 */
    TSC_SOURCE_CPUID_15,  /* CPUID 0x15: crystal clock times the TSC/crystal ratio */
    TSC_SOURCE_CPUID_16,  /* CPUID 0x16: the processor's base frequency */
    TSC_SOURCE_HV_LEAF,   /* CPUID 0x40000010: the rate our own hypervisor reports */
};

/* What tsc_calibrate found: the rate in use and both candidate figures. */
struct tsc_calibration {
    uint64_t khz;              /* the rate every conversion uses */
    enum tsc_source source;
    uint64_t pit_khz;          /* the PIT measurement, 0 if the PIT did not answer */
    uint32_t pit_error_ppm;    /* how far off pit_khz can be, in parts per million */
    uint64_t cpuid_khz;        /* what a CPUID leaf reported, 0 if none did */
    enum tsc_source cpuid_leaf;/* which leaf reported cpuid_khz */
};

/* Needs cpu_identify() first (the CPUID leaves it may read depend on the maximum leaf). */
void tsc_calibrate(void);
uint64_t tsc_khz(void);
const struct tsc_calibration *tsc_calibration_get(void);
/* "PIT", "CPUID 0x15", ...: a source as `info` names it. */
const char *tsc_source_name(enum tsc_source source);
/* Ticks to microseconds and nanoseconds, without overflow for centuries of uptime. */
uint64_t tsc_to_us(uint64_t ticks);
uint64_t tsc_to_ns(uint64_t ticks);
/* Microseconds to ticks (for deadlines). */
uint64_t tsc_from_us(uint64_t us);
