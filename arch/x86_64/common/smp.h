/* What each CPU needs of its own on x86: a GDT and TSS with IST stacks, the shared IDT loaded, GS at its per-CPU block; and INIT-SIPI-SIPI. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* IST slots (TSS.IST1..3): the vectors that may arrive on an unusable stack. */
#define IST_DOUBLE_FAULT 1
#define IST_NMI 2
#define IST_MACHINE_CHECK 3

/* Give CPU `index` its tables (the boot CPU keeps the boot GDT and TSS) and
 * point GS at `percpu`. 0, or negative with `problem` filled. */
int smp_cpu_tables(uint32_t index, void *percpu, char *problem, uint32_t problem_size);

/* Start the CPU with APIC ID `apic_id` at entry(arg) on a fresh stack; true once it runs 64-bit code. */
bool smp_start(uint32_t apic_id, void (*entry)(uint64_t), uint64_t stack_top, uint64_t arg);
