/* The boot CPU's local xAPIC: the one-shot timer that ends a guest's slice, calibrated against the TSC. */
#pragma once
#include <stdint.h>

/*
 * Enable the xAPIC at its default base, mask the legacy PIC and LINT0 (the
 * host takes no interrupt but the slice timer), set the spurious vector and
 * calibrate the timer against the TSC. The IDT must already hold handlers
 * for both vectors. 0, or negative after printing why.
 */
int apic_timer_init(uint8_t timer_vector, uint8_t spurious_vector);

/* Fire the timer once, tsc_ticks TSC ticks from now (clamped to its range). */
void apic_timer_arm(uint64_t tsc_ticks);

/*
 * Stop the timer and deliver any of its interrupts still pending, so none is
 * left to end the next slice at once. Runs with IF=0 and returns with IF=0.
 */
void apic_timer_drain(void);

/* The timer's rate after calibration, in kHz (0 before). */
uint64_t apic_timer_khz(void);
