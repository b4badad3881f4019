/* Each CPU's local xAPIC: the one-shot timer that ends a slice or window, EOI, and IPIs between CPUs. */
#pragma once
#include <stdint.h>

/*
 * This CPU: enable the xAPIC at its default base, mask the legacy PIC and
 * LINT0, set the spurious vector and put the timer in one-shot mode on
 * timer_vector (the first call calibrates it against the TSC). The IDT must
 * already hold handlers for both vectors. 0, or negative after printing why.
 */
int apic_local_init(uint8_t timer_vector, uint8_t spurious_vector);

/* This CPU's APIC ID (the xAPIC ID register's top byte). */
uint32_t apic_id(void);
void apic_eoi(void);
/* A fixed interrupt on `vector` to the CPU whose APIC ID is dest. */
void apic_send_ipi(uint32_t dest, uint8_t vector);
/* INIT, then STARTUP at real-mode page `page` (address page * 4 KiB): how a CPU is started. */
void apic_send_init(uint32_t dest);
void apic_send_startup(uint32_t dest, uint8_t page);

/* Stop the timer if it has not fired. */
void apic_timer_stop(void);

/* Fire the timer once, tsc_ticks TSC ticks from now (clamped to its range). */
void apic_timer_arm(uint64_t tsc_ticks);

/*
 * Stop the timer and deliver any of its interrupts still pending, so none is
 * left to end the next slice at once. Runs with IF=0 and returns with IF=0.
 */
void apic_timer_drain(void);

/* The timer's rate after calibration, in kHz (0 before). */
uint64_t apic_timer_khz(void);
