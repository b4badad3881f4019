/* What the longmode kernel's files share: port I/O, console output, the check report and the probes that catch a fault. */
#pragma once
#include <stdint.h>

#define COM1 0x3f8
#define DEBUG_EXIT 0xf4
#define VEC_GP 13
#define NO_FAULT (-1)
#define MSR_APIC_BASE 0x1bu

static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

extern int amd;                    /* the CPU says AuthenticAMD */
/* A fault the probes expect resumes at recover_rip with its vector in fault_vector (entry.S). */
extern volatile uint64_t recover_rip;
extern volatile int32_t fault_vector;
extern const char *check_prefix;   /* what each check line starts with */

void putc(char c);
void puts(const char *s);
void puthex(uint64_t v);
void putdec(int64_t v);
void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]);
int has_bit(uint32_t leaf, uint32_t sub, int reg, int bit);
/* RDMSR / WRMSR: the vector they raised, or NO_FAULT. */
int rdmsr_probe(uint32_t msr, uint64_t *value);
int wrmsr_probe(uint32_t msr, uint64_t value);
uint64_t rdmsr(uint32_t msr);
/* One check line: ok or FAIL with the value; expect: the probe raised `want`. */
void check(const char *name, int ok, const char *detail, uint64_t value);
void expect(const char *name, int got, int want);
/* "PREFIX: N of M checks passed"; 0 if all did. */
int checks_report(void);
void idt_set(unsigned vector, uint64_t handler);
__attribute__((noreturn)) void finish(int code);

/* virq.c: the interrupt checks, for the "virq" command-line word, and what devirq.c shares of them. */
#define APIC_SVR 0xf0
#define APIC_TMR 0x180
#define IOAPIC_PAGE 0xfec00000ull
#define VEC_UART 0x44
#define VEC_DEVICE 0x45
#define VEC_SPURIOUS 0xff
__attribute__((noreturn)) void virq_mode(void);
extern volatile uint32_t irq_counts[256];   /* interrupts taken, by vector */
void irq_setup(void);                       /* the IDT's entries for entry.S's stubs */
void map_devices(void);                     /* the APIC and IOAPIC pages (and the 2 MiB round them), uncached */
uint32_t apic_read(uint32_t off);
void apic_write(uint32_t off, uint32_t value);
uint32_t ioapic_read(uint32_t reg);
void ioapic_write(uint32_t reg, uint32_t value);
/* HLT with interrupts on until irq_counts[vector] reaches want. */
void wait_for(unsigned vector, uint32_t want);

/* devirq.c: Python device models' interrupts and MMIO, for the "devirq" command-line word. */
__attribute__((noreturn)) void devirq_mode(void);
void device_irq(void);                      /* VEC_DEVICE's handler, before the EOI */
