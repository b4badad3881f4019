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

// MicroPython runs with interrupts on (the scheduler's timer preempts it):
// its atomic sections (the scheduler queue, Ctrl-C) keep them off.
static inline mp_uint_t port_irq_save(void) {
    uint64_t flags;
    __asm__ volatile ("pushfq; pop %0; cli" : "=r" (flags) : : "memory");
    return flags;
}
static inline void port_irq_restore(mp_uint_t flags) {
    if (flags & (1u << 9)) {
        __asm__ volatile ("sti" : : : "memory");
    }
}
#define MICROPY_BEGIN_ATOMIC_SECTION() port_irq_save()
#define MICROPY_END_ATOMIC_SECTION(state) port_irq_restore(state)
