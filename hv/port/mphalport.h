// MicroPython's hardware abstraction on Taipan: the serial console and the TSC.
#include <stddef.h>
#include <stdint.h>
#include "shared/runtime/interrupt_char.h"

static inline mp_uint_t mp_hal_ticks_cpu(void) {
    uint32_t lo, hi;
    __asm__ volatile ("rdtsc" : "=a" (lo), "=d" (hi));
    return ((uint64_t)hi << 32) | lo;
}

mp_uint_t mp_hal_ticks_ms(void);
mp_uint_t mp_hal_ticks_us(void);
void mp_hal_delay_ms(mp_uint_t ms);
void mp_hal_delay_us(mp_uint_t us);
