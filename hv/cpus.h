/* The machine's CPUs as Taipan runs them: per-CPU state reached through GS, and their bring-up. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "sched.h"

#define CPUS_MAX PT_CPUS_MAX

enum cpu_state {
    CPU_ABSENT,     /* not in the MADT (or beyond CPUS_MAX) */
    CPU_STARTING,   /* INIT-SIPI-SIPI sent, not yet up */
    CPU_ONLINE,     /* running its scheduler */
    CPU_FAILED,     /* did not come up, or its virtualization could not be enabled: problem says why */
};

struct cpu {
    struct cpu *self;           /* at %gs:0, so cpu_current() is one load */
    uint32_t index;             /* 0 is the boot CPU, which also runs MicroPython */
    uint32_t apic_id;
    volatile enum cpu_state state;
    char problem[96];
    struct cpu_sched sched;
};

static inline struct cpu *cpu_current(void)
{
    struct cpu *c;
    __asm__ volatile("mov %%gs:0, %0" : "=r"(c));
    return c;
}

/* The boot CPU becomes CPU 0: its per-CPU tables, GS base and local APIC. */
void cpus_init_boot(void);
/* Start every other enabled CPU the MADT lists, one at a time; each runs sched_run. */
void cpus_start_others(void);
struct cpu *cpu_get(uint32_t index);
/* CPUs with an index: the boot CPU and every AP that was tried (online or failed). */
uint32_t cpu_count(void);
const char *cpu_state_name(enum cpu_state s);
