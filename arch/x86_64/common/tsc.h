/* The time-stamp counter: reading it, and its measured rate. */
#pragma once
#include <stdint.h>

static inline uint64_t tsc_read(void)
{
    uint32_t lo, hi;
    __asm__ volatile ("rdtsc" : "=a" (lo), "=d" (hi));
    return ((uint64_t)hi << 32) | lo;
}

void tsc_calibrate(void);
uint64_t tsc_khz(void);
uint64_t tsc_to_us(uint64_t ticks);
