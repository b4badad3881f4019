/* The per-CPU scheduler: follows the plan CPU 0's MicroPython wrote, never calling Python at a window boundary. */
#include "apic.h"
#include "cpus.h"
#include "irq.h"
#include "libc.h"
#include "mailbox.h"
#include "mgmt.h"
#include "partition.h"
#include "port.h"
#include "sched.h"
#include "tsc.h"

/* A dedicated CPU and an idle one look at their requests this often. */
#define DEDICATED_WINDOW_US 10000u
/* A CPU with nothing runnable halts this long at most before it looks again. */
#define IDLE_POLL_US 1000u
/* While someone types on CPU 0, no window there outlasts the UART's FIFO. */
#define TYPING_WINDOW_US 1000u

static uint64_t us_to_tsc(uint64_t us)
{
    return us * tsc_khz() / 1000;
}

void sched_plan_set(struct cpu *c, const struct sched_plan *p)
{
    uint64_t f = spin_lock_irqsave(&c->sched.lock);
    c->sched.next = *p;
    c->sched.next_seq++;
    spin_unlock_irqrestore(&c->sched.lock, f);
    sched_kick(c);
}

void sched_plan_get(struct cpu *c, struct sched_plan *out, struct sched_window_stats *stats)
{
    uint64_t f = spin_lock_irqsave(&c->sched.lock);
    /* The newest plan: the one in force, or the one about to be taken. */
    *out = c->sched.next_seq != c->sched.seq ? c->sched.next : c->sched.plan;
    if (stats)
        memcpy(stats, c->sched.stats, sizeof(c->sched.stats));
    spin_unlock_irqrestore(&c->sched.lock, f);
}

void sched_kick(struct cpu *c)
{
    if (c != cpu_current() && c->state == CPU_ONLINE)
        apic_send_ipi(c->apic_id, IRQ_IPI_VECTOR);
}

void sched_interrupt(uint8_t vector)
{
    if (cpu_current()->index == 0)
        mgmt_interrupt(vector);
}

static void sched_adopt(struct cpu *c)
{
    struct cpu_sched *s = &c->sched;
    if (s->next_seq == s->seq)
        return;
    uint64_t f = spin_lock_irqsave(&s->lock);
    s->plan = s->next;
    s->seq = s->next_seq;
    memset(s->stats, 0, sizeof(s->stats));
    s->cur = 0;
    s->frame_start = tsc_read();
    s->adopted_tsc = s->frame_start;
    s->frames = 0;
    s->idle_tsc = 0;
    spin_unlock_irqrestore(&s->lock, f);
}

/* The earliest APIC timer deadline among the halted partitions this CPU runs, if before `until`. */
static uint64_t next_wake(const struct cpu *c, uint64_t until)
{
    for (int i = 0; i < partition_count(); i++) {
        const struct partition *p = partition_get(i);
        if (p->cpu == c->index && p->state == PART_RUNNING && p->wake_tsc && p->wake_tsc < until)
            until = p->wake_tsc;
    }
    return until;
}

/* Halt until an interrupt, until `until`, or until a halted vCPU's timer is due (the LAPIC timer wakes us). */
static void sched_idle(struct cpu *c, uint64_t until)
{
    until = next_wake(c, until);
    uint64_t now = tsc_read();
    if (until <= now)
        return;
    c->sched.running = SCHED_NOBODY;
    apic_timer_arm(until - now);
    /* STI's shadow covers HLT, so an interrupt that is already pending wakes
     * the HLT instead of slipping in before it. */
    __asm__ volatile("sti; hlt; cli" : : : "memory");
    apic_timer_stop();
    c->sched.idle_tsc += tsc_read() - now;
}

/* Nothing to run now: halt a poll period, or until management's wake-up
 * time on CPU 0 when that comes first. */
static void sched_idle_poll(struct cpu *c)
{
    uint64_t until = tsc_read() + us_to_tsc(IDLE_POLL_US);
    if (c->index == 0 && mgmt_wake_tsc() < until)
        until = mgmt_wake_tsc();
    sched_idle(c, until);
}

static struct partition *ready_partition(struct cpu *c, int index)
{
    struct partition *p = partition_get(index);
    return p && p->cpu == c->index && partition_runnable(p) ? p : 0;
}

static bool run_partition(struct cpu *c, int index, uint64_t end)
{
    struct partition *p = ready_partition(c, index);
    if (!p)
        return false;
    c->sched.running = index;
    for (;;) {
        uint64_t now = tsc_read();
        if (now >= end)
            return true;
        enum run_event ev = partition_run_slice(p, end - now);
        switch (ev) {
        case RUN_SLICE_END:
            /* Early: an IPI brought the CPU out for a request or a new plan. */
            if (tsc_read() < end) {
                partition_requests_service(c);
                if (c->sched.next_seq != c->sched.seq || !partition_runnable(p))
                    return false;
                continue;
            }
            return true;
        case RUN_HALTED:
            /* Blocked until an interrupt (p->wake_tsc): it costs nothing until then. */
            p->halts++;
            return false;
        case RUN_UPCALL:
            mailbox_post(p, MAIL_UPCALL);
            return false;
        case RUN_EXITED:
            mailbox_post(p, MAIL_EXITED);
            return false;
        case RUN_FAULTED:
            mailbox_post(p, MAIL_FAULTED);
            return false;
        case RUN_YIELDED:
        case RUN_NOT_RUNNING:
        default:
            return false;
        }
    }
}

/* Management's window until `end`: it runs when it has something to do (a
 * key, mail, its wake-up time). In its own time-triggered window (strict) it
 * is woken there as soon as it has; elsewhere the window ends when it
 * yields. Returns whether it wanted more time (was preempted). */
static bool run_management(struct cpu *c, uint64_t end, bool preemptible, bool strict)
{
    for (;;) {
        if (mgmt_ready()) {
            c->sched.running = SCHED_MGMT;
            bool yielded = mgmt_run(end, preemptible);
            c->sched.running = SCHED_NOBODY;
            if (!yielded)
                return true;
        }
        uint64_t now = tsc_read();
        if (!strict || now >= end)
            return false;
        uint64_t until = now + us_to_tsc(IDLE_POLL_US);
        if (mgmt_wake_tsc() < until)
            until = mgmt_wake_tsc();
        sched_idle(c, until < end ? until : end);
    }
}

/* Run one window's owner until `end`; the window's statistics follow. */
static void run_window(struct cpu *c, uint32_t w, uint64_t end, bool strict)
{
    struct cpu_sched *s = &c->sched;
    const struct sched_window *win = &s->plan.w[w];
    struct sched_window_stats *st = &s->stats[w];
    uint64_t start = tsc_read();
    bool wanted;
    st->runs++;
    if (win->owner == SCHED_MGMT) {
        /* Management is preemptible only where something else may run. */
        bool others = s->plan.count > 1 || s->plan.kind == SCHED_CYCLIC;
        wanted = run_management(c, end, others, strict);
    } else {
        wanted = run_partition(c, win->owner, end);
    }
    uint64_t now = tsc_read();
    st->run_tsc += now - start;
    if (now > end && now - end > st->over_max_tsc)
        st->over_max_tsc = now - end;
    if (wanted)
        st->preempts++;
    else
        st->halts++;
    c->sched.running = SCHED_NOBODY;
    /* A time-triggered window is the owner's even when it does not use it. */
    if (strict && !wanted)
        sched_idle(c, end);
}

static void note_start(struct sched_window_stats *st, uint64_t planned, uint64_t actual, uint64_t len)
{
    if (actual <= planned)
        return;
    uint64_t late = actual - planned;
    if (late > st->late_max_tsc)
        st->late_max_tsc = late;
    if (late * 10 > len)
        st->overruns++;
}

static void step_cyclic(struct cpu *c)
{
    struct cpu_sched *s = &c->sched;
    uint64_t frame = us_to_tsc(s->plan.frame_us);
    uint64_t now = tsc_read();
    if (frame == 0) {
        sched_idle(c, now + us_to_tsc(IDLE_POLL_US));
        return;
    }
    /* A frame missed whole (a long stall) is skipped, not replayed. */
    while (now >= s->frame_start + frame) {
        s->frame_start += frame;
        s->frames++;
    }
    uint64_t at = s->frame_start;
    for (uint32_t w = 0; w < s->plan.count; w++) {
        uint64_t len = us_to_tsc(s->plan.w[w].us);
        if (now < at + len) {
            if (now < at) {
                sched_idle(c, at);
                return;
            }
            note_start(&s->stats[w], at, now, len);
            run_window(c, w, at + len, true);
            return;
        }
        at += len;
    }
    /* The frame's tail that no window owns. */
    sched_idle(c, s->frame_start + frame);
}

static void step_round_robin(struct cpu *c)
{
    struct cpu_sched *s = &c->sched;
    uint32_t n = s->plan.count;
    /* Messages for CPU 0's MicroPython go ahead of the rotation. */
    if (c->index == 0 && mgmt_noticed()) {
        for (uint32_t w = 0; w < n; w++) {
            if (s->plan.w[w].owner == SCHED_MGMT) {
                run_window(c, w, tsc_read() + us_to_tsc(s->plan.w[w].us), false);
                return;
            }
        }
    }
    for (uint32_t step = 0; step < n; step++) {
        uint32_t w = (s->cur + step) % n;
        const struct sched_window *win = &s->plan.w[w];
        if (win->owner == SCHED_MGMT ? !mgmt_ready() : !ready_partition(c, win->owner))
            continue;
        s->cur = w + 1;
        uint64_t us = win->us;
        if (c->index == 0 && win->owner != SCHED_MGMT && port_typing() && us > TYPING_WINDOW_US)
            us = TYPING_WINDOW_US;
        run_window(c, w, tsc_read() + us_to_tsc(us), false);
        return;
    }
    sched_idle_poll(c);
}

_Noreturn void sched_run(struct cpu *c)
{
    c->sched.running = SCHED_NOBODY;
    for (;;) {
        sched_adopt(c);
        partition_requests_service(c);
        for (int i = 0; i < partition_count(); i++) {
            struct partition *p = partition_get(i);
            if (p->cpu == c->index)
                mailbox_retry(p);
        }
        struct cpu_sched *s = &c->sched;
        switch (s->plan.kind) {
        case SCHED_DEDICATED:
            if (s->plan.count) {
                run_window(c, 0, tsc_read() + us_to_tsc(DEDICATED_WINDOW_US), false);
                /* A halted dedicated partition's CPU halts too, until its next look. */
                if (!ready_partition(c, s->plan.w[0].owner))
                    sched_idle(c, tsc_read() + us_to_tsc(IDLE_POLL_US));
            } else {
                sched_idle(c, tsc_read() + us_to_tsc(DEDICATED_WINDOW_US));
            }
            break;
        case SCHED_ROUND_ROBIN:
            step_round_robin(c);
            break;
        case SCHED_CYCLIC:
            step_cyclic(c);
            break;
        case SCHED_IDLE:
        default:
            sched_idle(c, tsc_read() + us_to_tsc(DEDICATED_WINDOW_US));
            break;
        }
    }
}
