/* Spinlocks for state that several CPUs touch: taken with local interrupts off, so a holder is never preempted on its own CPU. */
#pragma once
#include <stdint.h>

#define RFLAGS_IF (1ull << 9)

typedef struct {
    volatile uint32_t locked;
} spinlock_t;

static inline uint64_t spin_lock_irqsave(spinlock_t *l)
{
    uint64_t flags;
    __asm__ volatile("pushfq; pop %0; cli" : "=r"(flags) : : "memory");
    while (__atomic_exchange_n(&l->locked, 1u, __ATOMIC_ACQUIRE)) {
        while (l->locked)
            __asm__ volatile("pause");
    }
    return flags;
}

static inline void spin_unlock_irqrestore(spinlock_t *l, uint64_t flags)
{
    __atomic_store_n(&l->locked, 0u, __ATOMIC_RELEASE);
    if (flags & RFLAGS_IF)
        __asm__ volatile("sti" : : : "memory");
}
