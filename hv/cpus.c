/* The CPUs: the boot CPU as CPU 0, the others found in the MADT and started one by one, each then following its plan. */
#include "acpi.h"
#include "apic.h"
#include "cpu.h"
#include "cpus.h"
#include "irq.h"
#include "libc.h"
#include "page_alloc.h"
#include "partition.h"
#include "printk.h"
#include "smp.h"
#include "tsc.h"

#define AP_STACK_PAGES 16              /* 64 KiB: the scheduler and the exit path */
#define AP_READY_TIMEOUT_MS 2000u      /* from its first 64-bit instruction to its scheduler */

static struct cpu cpus[CPUS_MAX];
static uint32_t count;

static const char *const state_names[] = {
    [CPU_ABSENT] = "absent", [CPU_STARTING] = "starting",
    [CPU_ONLINE] = "online", [CPU_FAILED] = "failed",
};

const char *cpu_state_name(enum cpu_state s)
{
    return s <= CPU_FAILED ? state_names[s] : "?";
}

struct cpu *cpu_get(uint32_t index)
{
    return index < count ? &cpus[index] : 0;
}

uint32_t cpu_count(void)
{
    return count;
}

/* What every CPU does for itself: tables, local APIC, the backend. */
static int cpu_local_init(struct cpu *c)
{
    c->self = c;
    if (smp_cpu_tables(c->index, c, c->problem, sizeof(c->problem)) != 0)
        return -1;
    if (apic_local_init(IRQ_TIMER_VECTOR, IRQ_SPURIOUS_VECTOR) != 0) {
        snprintk(c->problem, sizeof(c->problem), "its local APIC could not be set up");
        return -1;
    }
    return 0;
}

void cpus_init_boot(void)
{
    struct cpu *c = &cpus[0];
    count = 1;
    c->index = 0;
    c->apic_id = apic_id();
    if (cpu_local_init(c) != 0) {
        printk("taipan: boot CPU: %s\n", c->problem);
        cpu_halt();
    }
    irq_init();
    c->state = CPU_ONLINE;
    /* Until MicroPython writes the real plans, CPU 0 runs management alone. */
    struct sched_plan boot_plan = { .kind = SCHED_ROUND_ROBIN, .count = 1,
                                    .w = { { .owner = SCHED_MGMT, .us = 10000 } } };
    sched_plan_set(c, &boot_plan);
    /* No backend is a state the console reports; the boot CPU still runs MicroPython. */
    partition_cpu_enable();
}

static _Noreturn void ap_entry(uint64_t index)
{
    struct cpu *c = &cpus[index];
    /* Without a backend at all (the boot CPU found none) a CPU still comes
     * up, to an idle plan; with one, each CPU must turn it on for itself. */
    if (cpu_local_init(c) != 0 || (partition_backend() && partition_cpu_enable() != 0)) {
        if (!c->problem[0])
            snprintk(c->problem, sizeof(c->problem), "its virtualization could not be enabled");
        c->state = CPU_FAILED;
        cpu_halt();
    }
    c->state = CPU_ONLINE;
    sched_run(c);
}

void cpus_start_others(void)
{
    const struct acpi_info *a = acpi_get();
    uint32_t self = cpus[0].apic_id;
    for (uint32_t i = 0; i < a->cpu_count && i < ACPI_CPUS_MAX; i++) {
        const struct acpi_cpu *m = &a->cpus[i];
        if (m->apic_id == self || !m->enabled)
            continue;
        if (count == CPUS_MAX) {
            printk("taipan: CPU with APIC ID %u not used: Taipan runs at most %u CPUs\n",
                   m->apic_id, CPUS_MAX);
            continue;
        }
        struct cpu *c = &cpus[count];
        c->index = count++;
        c->apic_id = m->apic_id;
        c->state = CPU_STARTING;
        uint64_t stack = page_alloc_named("cpu stacks", AP_STACK_PAGES);
        if (!stack) {
            snprintk(c->problem, sizeof(c->problem), "no memory for its stack");
            c->state = CPU_FAILED;
        } else if (!smp_start(c->apic_id, ap_entry, stack + AP_STACK_PAGES * PAGE_SIZE, c->index)) {
            snprintk(c->problem, sizeof(c->problem), "it did not answer INIT-SIPI-SIPI");
            c->state = CPU_FAILED;
        } else {
            /* One at a time: the trampoline page and its arguments are shared. */
            uint64_t end = tsc_read() + (uint64_t)AP_READY_TIMEOUT_MS * tsc_khz();
            while (c->state == CPU_STARTING && tsc_read() < end)
                __asm__ volatile("pause");
            if (c->state == CPU_STARTING) {
                snprintk(c->problem, sizeof(c->problem), "it started but never reached its scheduler");
                c->state = CPU_FAILED;
            }
        }
        if (c->state == CPU_FAILED)
            printk("taipan: CPU %u (APIC ID %u) did not come up: %s\n", c->index, c->apic_id, c->problem);
    }
    uint32_t online = 0;
    for (uint32_t i = 0; i < count; i++)
        online += cpus[i].state == CPU_ONLINE;
    printk("taipan: %u of %u CPUs online\n", online, count);
}
