/* Per-CPU x86 tables (GDT, TSS with IST stacks, GS base) and starting an AP through the generated real-mode trampoline. */
#include "apic.h"
#include "boot_symbols.h"
#include "cpu.h"
#include "idt.h"
#include "layout.h"
#include "libc.h"
#include "page_alloc.h"
#include "printk.h"
#include "smp.h"
#include "tsc.h"

#define MSR_GS_BASE 0xc0000101
#define GDT_BYTES (LAYOUT_GDT_ENTRIES * 8)
#define TSS_RSP0_OFFSET 0x04
#define TSS_IST_OFFSET(n) (0x24 + 8 * ((n) - 1))
#define IST_SLOTS 3
#define IST_PAGES 4                  /* 16 KiB each */
#define TSS_TYPE_AVAILABLE 0x89      /* present, 64-bit TSS, available */

/* MultiProcessor Specification B.4 / SDM 8.4.4.1: INIT, 10 ms, STARTUP, 200 us, STARTUP. */
#define INIT_WAIT_US 10000u
#define STARTUP_WAIT_US 200u
#define ALIVE_WAIT_US 200000u

struct ap_args {
    uint64_t entry, stack, arg;
    volatile uint64_t alive;
};
_Static_assert(sizeof(struct ap_args) == 32, "boot/ap.py lays out four quadwords");

struct cpu_tables {
    uint8_t gdt[GDT_BYTES] __attribute__((aligned(16)));
    uint8_t tss[LAYOUT_TSS_SIZE] __attribute__((aligned(16)));
};
static struct cpu_tables ap_tables[15];

static void tss_write64(uint8_t *tss, uint32_t offset, uint64_t value)
{
    /* The TSS's 64-bit fields are only 4-byte aligned. */
    memcpy(tss + offset, &value, sizeof(value));
}

static void tss_descriptor(uint8_t *gdt, uint64_t base)
{
    uint8_t *d = gdt + LAYOUT_SEL_TSS;
    uint32_t limit = LAYOUT_TSS_SIZE - 1;
    memset(d, 0, 16);
    d[0] = (uint8_t)limit;
    d[1] = (uint8_t)(limit >> 8);
    d[2] = (uint8_t)base;
    d[3] = (uint8_t)(base >> 8);
    d[4] = (uint8_t)(base >> 16);
    d[5] = TSS_TYPE_AVAILABLE;
    d[7] = (uint8_t)(base >> 24);
    uint32_t high = (uint32_t)(base >> 32);
    memcpy(d + 8, &high, 4);
}

static void tables_load(struct cpu_tables *t)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } gdtr = { GDT_BYTES - 1, (uint64_t)(uintptr_t)t->gdt };
    __asm__ volatile("lgdt %0" : : "m"(gdtr));
    /* A far return reloads CS from the new table; the data selectors follow. */
    __asm__ volatile(
        "pushq %0\n\t"
        "leaq 1f(%%rip), %%rax\n\t"
        "pushq %%rax\n\t"
        "lretq\n"
        "1:\n\t"
        "movw %w1, %%ax\n\t"
        "movw %%ax, %%ds\n\t"
        "movw %%ax, %%es\n\t"
        "movw %%ax, %%ss\n\t"
        : : "i"(LAYOUT_SEL_CODE64), "r"((uint32_t)LAYOUT_SEL_DATA) : "rax", "memory");
    __asm__ volatile("ltr %w0" : : "r"((uint16_t)LAYOUT_SEL_TSS));
    idt_load();
}

int smp_cpu_tables(uint32_t index, void *percpu, char *problem, uint32_t problem_size)
{
    uint8_t *tss = (uint8_t *)(uintptr_t)LAYOUT_BOOT_TSS;
    struct cpu_tables *t = 0;
    if (index > 0) {
        if (index > sizeof(ap_tables) / sizeof(ap_tables[0])) {
            snprintk(problem, problem_size, "CPU index %u has no tables", index);
            return -1;
        }
        t = &ap_tables[index - 1];
        memcpy(t->gdt, (const void *)(uintptr_t)LAYOUT_BOOT_GDT, GDT_BYTES);
        memcpy(t->tss, (const void *)(uintptr_t)LAYOUT_BOOT_TSS, LAYOUT_TSS_SIZE);
        tss_descriptor(t->gdt, (uint64_t)(uintptr_t)t->tss);
        tss = t->tss;
    }
    /* One stack per IST slot: an NMI inside the #DF handler must not land on its frame. */
    uint64_t ist = page_alloc_named("cpu ist stacks", IST_SLOTS * IST_PAGES);
    if (!ist) {
        snprintk(problem, problem_size, "no memory for its IST stacks");
        return -1;
    }
    for (int slot = 1; slot <= IST_SLOTS; slot++)
        tss_write64(tss, TSS_IST_OFFSET(slot), ist + (uint64_t)slot * IST_PAGES * PAGE_SIZE);
    if (t)
        tables_load(t);
    wrmsr(MSR_GS_BASE, (uint64_t)(uintptr_t)percpu);
    return 0;
}

static void wait_us(uint64_t us)
{
    uint64_t end = tsc_read() + us * tsc_khz() / 1000;
    while (tsc_read() < end)
        __asm__ volatile("pause");
}

bool smp_start(uint32_t apic_id, void (*entry)(uint64_t), uint64_t stack_top, uint64_t arg)
{
    /* The image carries the trampoline; the SIPI can only start a CPU below 1 MiB. */
    memcpy((void *)(uintptr_t)LAYOUT_AP_TRAMPOLINE, (const void *)(uintptr_t)BOOT_SYM_AP_IMAGE,
           BOOT_AP_IMAGE_BYTES);
    struct ap_args *args = (struct ap_args *)(uintptr_t)LAYOUT_AP_TRAMPOLINE_ARGS;
    args->entry = (uint64_t)(uintptr_t)entry;
    args->stack = stack_top;
    args->arg = arg;
    args->alive = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    apic_send_init(apic_id);
    wait_us(INIT_WAIT_US);
    for (int i = 0; i < 2 && !args->alive; i++) {
        apic_send_startup(apic_id, (uint8_t)(LAYOUT_AP_TRAMPOLINE >> 12));
        wait_us(STARTUP_WAIT_US);
    }
    uint64_t end = tsc_read() + ALIVE_WAIT_US * tsc_khz() / 1000;
    while (!args->alive && tsc_read() < end)
        __asm__ volatile("pause");
    return args->alive != 0;
}
