/* Lifecycle across CPUs: CPU 0 asks, the partition's own CPU starts or stops it and applies policy's answers, so its vCPU is only ever touched there. */
#include "cpus.h"
#include "mailbox.h"
#include "mgmt.h"
#include "partition.h"
#include "printk.h"
#include "tsc.h"

/* Loading a partition's memory (zeroing it, copying its image) takes longest:
 * gigabytes under an emulator take seconds. Past this the CPU is taken for dead. */
#define REQUEST_TIMEOUT_MS 60000u

int partition_request(struct partition *p, enum part_request req, const char *reason)
{
    struct cpu *c = cpu_get(p->cpu);
    if (!c || c->state != CPU_ONLINE) {
        snprintk(p->reason, sizeof(p->reason), "its CPU %u is not online%s%s", p->cpu,
                 c && c->problem[0] ? ": " : "", c ? c->problem : "");
        return -1;
    }
    snprintk(p->req_reason, sizeof(p->req_reason), "%s", reason ? reason : "");
    p->req = req;
    uint32_t seq = p->req_seq + 1;
    __atomic_store_n(&p->req_seq, seq, __ATOMIC_RELEASE);
    sched_kick(c);
    uint64_t end = tsc_read() + (uint64_t)REQUEST_TIMEOUT_MS * tsc_khz();
    while (__atomic_load_n(&p->done_seq, __ATOMIC_ACQUIRE) != seq) {
        if (tsc_read() > end) {
            snprintk(p->reason, sizeof(p->reason), "CPU %u did not carry out the request in %u ms",
                     p->cpu, REQUEST_TIMEOUT_MS);
            return -1;
        }
        /* The partition may live on this very CPU: let its scheduler run. */
        if (cpu_current() == c && mgmt_active())
            mgmt_yield();
        else
            __asm__ volatile("pause");
    }
    return p->req_result;
}

void partition_requests_service(struct cpu *c)
{
    for (int i = 0; i < partition_count(); i++) {
        struct partition *p = partition_get(i);
        uint32_t seq = __atomic_load_n(&p->req_seq, __ATOMIC_ACQUIRE);
        if (p->cpu != c->index || seq == p->done_seq)
            continue;
        int result = 0;
        if (p->req == PART_REQ_START)
            result = partition_start(p);
        else if (p->req == PART_REQ_STOP)
            partition_stop(p, PART_STOPPED, p->req_reason);
        p->req_result = result;
        p->req = PART_REQ_NONE;
        __atomic_store_n(&p->done_seq, seq, __ATOMIC_RELEASE);
    }
}

void partition_answer(struct partition *p, enum upcall_action action, uint64_t value)
{
    if (!p->upcall_pending)
        return;
    p->answer_action = (int)action;
    p->answer_value = value;
    __atomic_store_n(&p->answer_ready, true, __ATOMIC_RELEASE);
    sched_kick(cpu_get(p->cpu));
}

bool partition_runnable(struct partition *p)
{
    if (p->state != PART_RUNNING)
        return false;
    if (p->upcall_pending) {
        if (__atomic_load_n(&p->answer_ready, __ATOMIC_ACQUIRE)) {
            p->answer_ready = false;
            partition_resolve(p, (enum upcall_action)p->answer_action, p->answer_value);
            return p->state == PART_RUNNING;
        }
        uint32_t timeout_ms = partitions_table()->upcall_timeout_ms;
        if (tsc_read() - p->upcall_tsc > (uint64_t)timeout_ms * tsc_khz()) {
            char why[sizeof(p->reason)];
            snprintk(why, sizeof(why), "policy did not answer its %s exit at RIP %#llx within %u ms",
                     partition_exit_name(p->pending.kind), (unsigned long long)p->pending.rip,
                     timeout_ms);
            partition_stop(p, PART_STOPPED, why);
            mailbox_post(p, MAIL_TIMEOUT);
        }
        return false;
    }
    if (!p->wake_tsc)
        return true;
    if (!partition_wakes(p, tsc_read()))
        return false;
    p->wake_tsc = 0;
    return true;
}
