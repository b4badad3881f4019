/* The management context: MicroPython on CPU 0 as one preemptible host context with its own stack. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* On the boot stack, from hv_main: become the management context. CPU 0's
 * scheduler starts on a stack of its own and returns here the first time it
 * gives management a window; then hv_main goes on into MicroPython. */
void mgmt_start(void);

/* Scheduler side (CPU 0): run management until deadline_tsc or until it
 * yields. Returns true if it yielded (nothing to do), false if preempted. */
bool mgmt_run(uint64_t deadline_tsc, bool preemptible);

/* MicroPython side: give the rest of this window back (the console waits
 * for a key, or sleep_ms). Returns when management runs again. */
void mgmt_yield(void);
/* The same, but management need not run again before until_tsc, unless mail
 * arrives or (key) a byte waits in the console's UART. */
void mgmt_wait(uint64_t until_tsc, bool key);
/* Scheduler side: whether management has something to do now, and the time
 * it asked to be woken at (0: its next window). */
bool mgmt_ready(void);
uint64_t mgmt_wake_tsc(void);

/* From an interrupt on CPU 0: if management is running and its window is
 * over, switch to the scheduler (the interrupt returns when it resumes). */
void mgmt_interrupt(uint8_t vector);

/* A message arrived: management should run soon and look (any CPU). */
void mgmt_notify(void);
/* Whether a message arrived since management last looked; clears it. */
bool mgmt_take_notice(void);
bool mgmt_noticed(void);

/* Whether CPU 0 is in the management context now. */
bool mgmt_active(void);
