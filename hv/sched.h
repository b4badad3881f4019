/* The per-CPU scheduler: the plan MicroPython writes (dedicated, round-robin or cyclic windows) and the C loop that follows it. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "ptable.h"
#include "spinlock.h"

#define SCHED_WINDOWS_MAX PT_WINDOWS_MAX
#define SCHED_MGMT (-1)          /* a window owned by the management context (MicroPython, CPU 0 only) */

/* Numbered as the partition table's PT_PLAN_* kinds. */
enum sched_kind {
    SCHED_IDLE = 0,              /* nothing runs here: the CPU halts */
    SCHED_DEDICATED = 1,         /* one partition, no time slicing */
    SCHED_ROUND_ROBIN = 2,       /* each window's owner in turn for its slice; a halted owner gives its turn away */
    SCHED_CYCLIC = 3,            /* a major frame of fixed windows, time-triggered; the rest of the frame idles */
};

struct sched_window {
    int16_t owner;               /* partition index, or SCHED_MGMT */
    uint32_t us;                 /* its length (dedicated: ignored) */
};

struct sched_plan {
    enum sched_kind kind;
    uint32_t count;
    uint32_t frame_us;           /* cyclic: the major frame */
    struct sched_window w[SCHED_WINDOWS_MAX];
};

/* What one window's owner did with its time, as MicroPython reads it back. */
struct sched_window_stats {
    uint64_t runs;               /* windows begun */
    uint64_t run_tsc;            /* TSC ticks its owner ran */
    uint64_t overruns;           /* windows that began late by more than a tenth of their length */
    uint64_t preempts;           /* ended by the timer with the owner still wanting to run */
    uint64_t halts;              /* ended early: the owner halted, yielded or was blocked */
    uint64_t late_max_tsc;       /* the latest start against its place in the frame */
    uint64_t over_max_tsc;       /* the furthest its owner ran past the window's end */
};

struct cpu_sched {
    spinlock_t lock;             /* guards next and next_seq (written by CPU 0, read here) */
    struct sched_plan next;
    volatile uint32_t next_seq;
    uint32_t seq;                /* the plan in force is next_seq's value when taken */
    struct sched_plan plan;
    struct sched_window_stats stats[SCHED_WINDOWS_MAX];
    uint32_t cur;                /* round-robin: the window to try next */
    uint64_t frame_start;        /* cyclic: TSC at the current frame's start */
    uint64_t frames;
    uint64_t adopted_tsc;        /* when the plan in force was taken: its statistics start there */
    uint64_t idle_tsc;           /* halted with nothing to run */
    volatile int32_t running;    /* owner now on this CPU, SCHED_MGMT, or SCHED_NOBODY */
};
#define SCHED_NOBODY (-2)

struct cpu;

/* Install a new plan on a CPU (any CPU may call; CPU 0's MicroPython does).
 * The CPU takes it at its next window boundary; an IPI makes that now. */
void sched_plan_set(struct cpu *c, const struct sched_plan *p);
/* The plan in force (copied), and its per-window statistics. */
void sched_plan_get(struct cpu *c, struct sched_plan *out, struct sched_window_stats *stats);

/* Follow this CPU's plan forever. */
_Noreturn void sched_run(struct cpu *c);

/* Wake a CPU from halt or from its guest (the IPI vector), so it looks at its requests. */
void sched_kick(struct cpu *c);
