/* The longmode kernel's "virq" mode: an IDT, the APIC in xAPIC and x2APIC mode, its timer in each mode, HLT, EOI, self-IPIs, an NMI, and the UART's receive and THR-empty interrupts through the IOAPIC. */
#include "kernel.h"

#define APIC_BASE_EXTD (1ull << 10)
#define APIC_BASE_EN (1ull << 11)
#define APIC_PAGE 0xfee00000ull

/* xAPIC register offsets; x2APIC MSR = 0x800 + offset / 16. */
#define APIC_ID 0x20
#define APIC_VERSION 0x30
#define APIC_TPR 0x80
#define APIC_PPR 0xa0
#define APIC_EOI 0xb0
#define APIC_ISR 0x100
#define APIC_IRR 0x200
#define APIC_ICR_LO 0x300
#define APIC_ICR_HI 0x310
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INITIAL 0x380
#define APIC_TIMER_CURRENT 0x390
#define APIC_TIMER_DIVIDE 0x3e0
#define X2APIC_MSR(off) (0x800u + ((off) >> 4))
#define X2APIC_SELF_IPI 0x83fu
#define MSR_TSC_DEADLINE 0x6e0u

#define VEC_NMI 2
#define VEC_TIMER 0x40
#define VEC_IPI 0x41
#define LVT_MASKED (1u << 16)
#define LVT_PERIODIC (1u << 17)
#define LVT_TSC_DEADLINE (2u << 17)
#define DIVIDE_BY_1 0xb
#define ICR_SELF (1u << 18)
#define ICR_NMI (4u << 8)

#define UART_IER 1
#define UART_IIR 2
#define UART_MCR 4
#define UART_LSR 5
#define MCR_OUT2 0x08

#define HC_TSC_KHZ 3
#define PERIODS 20

extern const uint64_t irq_table[][2];
extern uint64_t pdpt[512];

static uint64_t pd_high[512] __attribute__((aligned(4096)));
volatile uint32_t irq_counts[256];
static volatile uint8_t uart_byte;
static volatile uint8_t uart_iir;
static volatile uint32_t uart_rte, uart_tmr;   /* pin 4's entry and the vector's TMR word, seen by the handler */
static int x2;
static uint64_t tsc_khz;

static uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}

static uint64_t hypercall_tsc_khz(void)
{
    uint64_t rax = HC_TSC_KHZ;
    if (amd)
        __asm__ volatile("vmmcall" : "+a"(rax) : : "rbx", "rcx", "memory");
    else
        __asm__ volatile("vmcall" : "+a"(rax) : : "rbx", "rcx", "memory");
    return rax;
}

uint32_t apic_read(uint32_t off)
{
    if (x2)
        return (uint32_t)rdmsr(X2APIC_MSR(off));
    return *(volatile uint32_t *)(APIC_PAGE + off);
}

void apic_write(uint32_t off, uint32_t value)
{
    if (x2)
        wrmsr_probe(X2APIC_MSR(off), value);
    else
        *(volatile uint32_t *)(APIC_PAGE + off) = value;
}

void ioapic_write(uint32_t reg, uint32_t value)
{
    *(volatile uint32_t *)IOAPIC_PAGE = reg;
    *(volatile uint32_t *)(IOAPIC_PAGE + 0x10) = value;
}

uint32_t ioapic_read(uint32_t reg)
{
    *(volatile uint32_t *)IOAPIC_PAGE = reg;
    return *(volatile uint32_t *)(IOAPIC_PAGE + 0x10);
}

static int write_cr8_probe(uint64_t value)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%r11\n\tmov %%r11, recover_rip(%%rip)\n\tmov %0, %%cr8\n1:\n\tmovq $0, recover_rip(%%rip)"
                     : : "r"(value) : "r11", "memory");
    return fault_vector;
}

static uint64_t read_cr8(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr8, %0" : "=r"(v));
    return v;
}

/* CR8 is the APIC's TPR[7:4], the virtual one: the host's own TPR never changes. */
static void cr8_checks(void)
{
    expect("mov cr8, 5", write_cr8_probe(5), NO_FAULT);
    check("CR8 writes TPR[7:4]", apic_read(APIC_TPR) == 0x50, "tpr=", apic_read(APIC_TPR));
    apic_write(APIC_TPR, 0x3f);
    check("CR8 reads TPR[7:4]", read_cr8() == 3, "cr8=", read_cr8());
    expect("mov cr8 with reserved bit 4", write_cr8_probe(0x10), VEC_GP);
    write_cr8_probe(0);
    check("CR8 0 clears TPR", apic_read(APIC_TPR) == 0, "tpr=", apic_read(APIC_TPR));
}

/* Called by the stubs in entry.S with interrupts off. */
void irq_handler(uint64_t vector)
{
    irq_counts[vector & 0xff]++;
    if (vector == VEC_DEVICE)
        device_irq();
    if (vector == VEC_UART) {
        uart_rte = ioapic_read(0x10 + 2 * 4);
        uart_tmr = apic_read(APIC_TMR + (VEC_UART / 32) * 0x10);
        uart_iir = inb(COM1 + UART_IIR);
        while (inb(COM1 + UART_LSR) & 1)
            uart_byte = inb(COM1);
    }
    /* NMIs and the spurious vector take no EOI (SDM vol. 3A, 11.8.5, 11.9). */
    if (vector != VEC_NMI && vector != VEC_SPURIOUS)
        apic_write(APIC_EOI, 0);
}

/* The two device pages, uncached, in a page directory for 3-4 GiB. */
void map_devices(void)
{
    pd_high[(APIC_PAGE >> 21) & 511] = (APIC_PAGE & ~0x1fffffull) | 0x9b;     /* present, writable, PWT, PCD, 2 MiB */
    pd_high[(IOAPIC_PAGE >> 21) & 511] = (IOAPIC_PAGE & ~0x1fffffull) | 0x9b;
    pdpt[3] = (uint64_t)pd_high | 3;
    uint64_t cr3;
    __asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
}

/* HLT with interrupts on until irq_counts[vector] reaches `want` (the STI shadow covers the HLT, so nothing slips between). */
void wait_for(unsigned vector, uint32_t want)
{
    while (irq_counts[vector] < want)
        __asm__ volatile("sti; hlt; cli" : : : "memory");
}

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* "virq: MODE WHAT after N us": how long the wait for an interrupt took, for the log. */
static void report_wait(const char *mode, const char *what, uint64_t tsc)
{
    puts("virq: ");
    puts(mode);
    puts(what);
    puts(" after ");
    putdec((int64_t)(tsc * 1000 / tsc_khz));
    puts(" us\n");
}

static void timer_checks(const char *mode)
{
    /* One-shot: 1 ms at the TSC's rate (divide by 1). */
    apic_write(APIC_TIMER_DIVIDE, DIVIDE_BY_1);
    apic_write(APIC_LVT_TIMER, VEC_TIMER);
    uint32_t before = irq_counts[VEC_TIMER];
    uint64_t t0 = rdtsc();
    apic_write(APIC_TIMER_INITIAL, (uint32_t)tsc_khz);
    check(x2 ? "x2APIC timer counts down" : "xAPIC timer counts down",
          apic_read(APIC_TIMER_CURRENT) <= tsc_khz, "current=", apic_read(APIC_TIMER_CURRENT));
    wait_for(VEC_TIMER, before + 1);
    uint64_t waited = rdtsc() - t0;
    report_wait(mode, " one-shot timer interrupt", waited);
    check(x2 ? "x2APIC one-shot fires after its count" : "xAPIC one-shot fires after its count",
          waited >= tsc_khz, "tsc=", waited);
    check(x2 ? "x2APIC one-shot current count 0 after firing" : "xAPIC one-shot current count 0 after firing",
          apic_read(APIC_TIMER_CURRENT) == 0, "current=", apic_read(APIC_TIMER_CURRENT));
    /* Nothing more comes from a one-shot timer. */
    uint64_t spin_until = rdtsc() + 3 * tsc_khz;
    __asm__ volatile("sti" ::: "memory");
    while (rdtsc() < spin_until)
        __asm__ volatile("pause");
    __asm__ volatile("cli" ::: "memory");
    check(x2 ? "x2APIC one-shot fires once" : "xAPIC one-shot fires once",
          irq_counts[VEC_TIMER] == before + 1, "count=", irq_counts[VEC_TIMER] - before);

    /* Periodic: PERIODS interrupts of 1 ms each, waited for by HLT. */
    before = irq_counts[VEC_TIMER];
    apic_write(APIC_LVT_TIMER, VEC_TIMER | LVT_PERIODIC);
    t0 = rdtsc();
    apic_write(APIC_TIMER_INITIAL, (uint32_t)tsc_khz);
    wait_for(VEC_TIMER, before + PERIODS);
    waited = rdtsc() - t0;
    apic_write(APIC_LVT_TIMER, VEC_TIMER | LVT_PERIODIC | LVT_MASKED);
    apic_write(APIC_TIMER_INITIAL, 0);
    report_wait(mode, " periodic timer, " STRINGIFY(PERIODS) " interrupts,", waited);
    check(x2 ? "x2APIC periodic timer keeps its period" : "xAPIC periodic timer keeps its period",
          waited >= (PERIODS - 1) * tsc_khz, "tsc=", waited);
}

static void ipi_checks(void)
{
    /* With IF = 0 the self-IPI waits in IRR; STI delivers it after the instruction that follows. */
    uint32_t before = irq_counts[VEC_IPI];
    if (x2)
        wrmsr_probe(X2APIC_SELF_IPI, VEC_IPI);
    else
        apic_write(APIC_ICR_LO, ICR_SELF | VEC_IPI);
    for (volatile int i = 0; i < 100000; i++)
        ;
    check(x2 ? "x2APIC self-IPI waits while IF=0" : "xAPIC self-IPI waits while IF=0",
          irq_counts[VEC_IPI] == before, "count=", irq_counts[VEC_IPI] - before);
    uint32_t irr = apic_read(APIC_IRR + (VEC_IPI / 32) * 0x10);
    check(x2 ? "x2APIC IRR holds the self-IPI" : "xAPIC IRR holds the self-IPI",
          (irr >> (VEC_IPI % 32)) & 1, "irr=", irr);
    __asm__ volatile("sti; nop; cli" ::: "memory");
    check(x2 ? "x2APIC self-IPI delivered after STI" : "xAPIC self-IPI delivered after STI",
          irq_counts[VEC_IPI] == before + 1, "count=", irq_counts[VEC_IPI] - before);
    uint32_t isr = apic_read(APIC_ISR + (VEC_IPI / 32) * 0x10);
    check(x2 ? "x2APIC ISR clear after EOI" : "xAPIC ISR clear after EOI", !((isr >> (VEC_IPI % 32)) & 1), "isr=", isr);
    /* TPR above the vector's class holds it back; lowering TPR lets it in. */
    apic_write(APIC_TPR, 0x50);
    check(x2 ? "x2APIC PPR follows TPR" : "xAPIC PPR follows TPR", apic_read(APIC_PPR) == 0x50, "ppr=", apic_read(APIC_PPR));
    if (x2)
        wrmsr_probe(X2APIC_SELF_IPI, VEC_IPI);
    else
        apic_write(APIC_ICR_LO, ICR_SELF | VEC_IPI);
    __asm__ volatile("sti; nop; nop; nop; cli" ::: "memory");
    check(x2 ? "x2APIC TPR holds the IPI back" : "xAPIC TPR holds the IPI back",
          irq_counts[VEC_IPI] == before + 1, "count=", irq_counts[VEC_IPI] - before);
    apic_write(APIC_TPR, 0);
    __asm__ volatile("sti; nop; cli" ::: "memory");
    check(x2 ? "x2APIC IPI taken once TPR drops" : "xAPIC IPI taken once TPR drops",
          irq_counts[VEC_IPI] == before + 2, "count=", irq_counts[VEC_IPI] - before);
}

static void xapic_checks(void)
{
    x2 = 0;
    map_devices();
    uint64_t base = rdmsr(MSR_APIC_BASE);
    check("APIC_BASE: xAPIC enabled at 0xfee00000", (base & ~0xfffull) == APIC_PAGE && (base & APIC_BASE_EN) && !(base & APIC_BASE_EXTD),
          "apic_base=", base);
    apic_write(APIC_SVR, 0x100 | VEC_SPURIOUS);
    check("xAPIC ID 0", apic_read(APIC_ID) == 0, "id=", apic_read(APIC_ID));
    check("xAPIC version 0x14 with 6 LVT entries", apic_read(APIC_VERSION) == 0x50014, "version=", apic_read(APIC_VERSION));
    check("xAPIC SVR reads back", apic_read(APIC_SVR) == 0x1ff, "svr=", apic_read(APIC_SVR));
    check("xAPIC LVT timer masked at reset", apic_read(APIC_LVT_TIMER) == LVT_MASKED, "lvt=", apic_read(APIC_LVT_TIMER));
    timer_checks("xAPIC");
    ipi_checks();
    cr8_checks();
    /* An NMI to its own APIC ID (the self shorthand takes fixed IPIs only): its handler runs, no EOI. */
    uint32_t before = irq_counts[VEC_NMI];
    apic_write(APIC_ICR_HI, 0);
    apic_write(APIC_ICR_LO, ICR_NMI);
    for (volatile int i = 0; i < 1000; i++)
        ;
    check("xAPIC self-NMI delivered with IF=0", irq_counts[VEC_NMI] == before + 1, "count=", irq_counts[VEC_NMI] - before);
}

static void x2apic_checks(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    check("CPUID offers x2APIC", has_bit(1, 0, 2, 21), "bit=", (uint64_t)has_bit(1, 0, 2, 21));
    check("CPUID offers the TSC-deadline timer", has_bit(1, 0, 2, 24), "bit=", (uint64_t)has_bit(1, 0, 2, 24));
    uint32_t r[4];
    cpuid(0, 0, r);
    if (r[0] >= 0xb) {
        cpuid(0xb, 0, r);
        check("CPUID.0xB:EDX is the x2APIC ID 0", r[3] == 0, "edx=", r[3]);
    }
    expect("rdmsr x2APIC ID in xAPIC mode", rdmsr_probe(X2APIC_MSR(APIC_ID), 0), VEC_GP);
    expect("wrmsr APIC_BASE.EXTD", wrmsr_probe(MSR_APIC_BASE, base | APIC_BASE_EXTD), NO_FAULT);
    x2 = 1;
    uint64_t v = 0;
    expect("rdmsr x2APIC ID", rdmsr_probe(X2APIC_MSR(APIC_ID), &v), NO_FAULT);
    check("x2APIC ID 0", v == 0, "id=", v);
    expect("rdmsr x2APIC LDR", rdmsr_probe(X2APIC_MSR(0xd0), &v), NO_FAULT);
    check("x2APIC LDR derived from the ID", v == 1, "ldr=", v);
    expect("wrmsr x2APIC ID (read-only)", wrmsr_probe(X2APIC_MSR(APIC_ID), 1), VEC_GP);
    expect("rdmsr x2APIC EOI (write-only)", rdmsr_probe(X2APIC_MSR(APIC_EOI), 0), VEC_GP);
    expect("wrmsr x2APIC EOI with a nonzero value", wrmsr_probe(X2APIC_MSR(APIC_EOI), 1), VEC_GP);
    expect("rdmsr x2APIC 0x831 (no ICR high in x2APIC)", rdmsr_probe(0x831, 0), VEC_GP);
    expect("wrmsr x2APIC TPR with bits 63:32", wrmsr_probe(X2APIC_MSR(APIC_TPR), 1ull << 32), VEC_GP);
    check("x2APIC SVR kept from xAPIC mode", apic_read(APIC_SVR) == 0x1ff, "svr=", apic_read(APIC_SVR));
    timer_checks("x2APIC");
    ipi_checks();

    /* TSC-deadline: 2 ms ahead on the guest's own TSC. */
    apic_write(APIC_LVT_TIMER, VEC_TIMER | LVT_TSC_DEADLINE);
    uint32_t before = irq_counts[VEC_TIMER];
    uint64_t t0 = rdtsc();
    wrmsr_probe(MSR_TSC_DEADLINE, t0 + 2 * tsc_khz);
    /* It reads back until it fires (a neighbour's slice may have used the 2 ms: then IRR has the vector). */
    uint64_t armed = rdmsr(MSR_TSC_DEADLINE);
    int fired = (apic_read(APIC_IRR + (VEC_TIMER / 32) * 0x10) >> (VEC_TIMER % 32)) & 1;
    check("TSC_DEADLINE reads back until it fires", armed == t0 + 2 * tsc_khz || (armed == 0 && fired), "deadline=", armed);
    wait_for(VEC_TIMER, before + 1);
    uint64_t waited = rdtsc() - t0;
    report_wait("x2APIC", " TSC-deadline timer interrupt", waited);
    check("TSC-deadline timer fires at the deadline", waited >= 2 * tsc_khz, "tsc=", waited);
    check("TSC_DEADLINE reads 0 after firing", rdmsr(MSR_TSC_DEADLINE) == 0, "deadline=", rdmsr(MSR_TSC_DEADLINE));

    expect("wrmsr APIC_BASE x2APIC to xAPIC directly", wrmsr_probe(MSR_APIC_BASE, base), VEC_GP);
    /* Back through disabled to xAPIC, for the IOAPIC's part. */
    expect("wrmsr APIC_BASE disabled", wrmsr_probe(MSR_APIC_BASE, base & ~(APIC_BASE_EN | APIC_BASE_EXTD)), NO_FAULT);
    expect("wrmsr APIC_BASE xAPIC again", wrmsr_probe(MSR_APIC_BASE, base), NO_FAULT);
    x2 = 0;
    check("xAPIC SVR at its reset value after re-enabling", apic_read(APIC_SVR) == 0xff, "svr=", apic_read(APIC_SVR));
    apic_write(APIC_SVR, 0x100 | VEC_SPURIOUS);
}

static void uart_checks(void)
{
    check("IOAPIC version 0x11 with 24 pins", ioapic_read(1) == 0x170011, "version=", ioapic_read(1));
    check("IOAPIC pin 4 masked at reset", ioapic_read(0x10 + 2 * 4) & (1u << 16), "rte=", ioapic_read(0x10 + 2 * 4));
    ioapic_write(0x10 + 2 * 4 + 1, 0);          /* destination: APIC 0 */
    ioapic_write(0x10 + 2 * 4, VEC_UART);       /* edge, fixed, physical, unmasked */
    outb(COM1 + UART_MCR, MCR_OUT2 | 0x3);     /* DTR, RTS, and OUT2 that lets the IRQ out */
    /* THR empty: enabling its interrupt raises it at once. */
    uint32_t before = irq_counts[VEC_UART];
    outb(COM1 + UART_IER, 0x02);
    __asm__ volatile("sti; nop; cli" ::: "memory");
    uint32_t taken = irq_counts[VEC_UART] - before;
    uint8_t iir = inb(COM1 + UART_IIR);
    /* Off before printing: every byte sent would raise THR empty again, as on the hardware. */
    outb(COM1 + UART_IER, 0);
    check("UART THR-empty interrupt when enabled", taken == 1 && uart_iir == 0xc2, "iir=", uart_iir);
    check("UART IIR clear after reporting THR empty", iir == 0xc1, "iir=", iir);

    /* Level-triggered: TMR set and remote IRR held from delivery to the EOI, once per assertion. */
    ioapic_write(0x10 + 2 * 4, VEC_UART | (1u << 15));
    before = irq_counts[VEC_UART];
    outb(COM1 + UART_IER, 0x02);
    __asm__ volatile("sti; nop; nop; nop; cli" ::: "memory");
    taken = irq_counts[VEC_UART] - before;
    uint32_t rte = ioapic_read(0x10 + 2 * 4);
    outb(COM1 + UART_IER, 0);
    check("IOAPIC level pin: one interrupt, TMR set", taken == 1 && ((uart_tmr >> (VEC_UART % 32)) & 1), "tmr=", uart_tmr);
    check("IOAPIC level pin: remote IRR until the EOI", (uart_rte & (1u << 14)) && !(rte & (1u << 14)), "rte=", uart_rte);
    ioapic_write(0x10 + 2 * 4, VEC_UART);
}

void irq_setup(void)
{
    for (int i = 0; irq_table[i][1]; i++)
        idt_set((unsigned)irq_table[i][0], irq_table[i][1]);
}

__attribute__((noreturn)) void virq_mode(void)
{
    check_prefix = "virq";
    irq_setup();
    tsc_khz = hypercall_tsc_khz();
    puts("virq: tsc_khz=");
    putdec((int64_t)tsc_khz);
    puts("\n");
    xapic_checks();
    x2apic_checks();
    uart_checks();
    int failed = checks_report();
    /* The receive interrupt: the test types a byte on `console NAME`. */
    puts("virq: waiting for a byte\n");
    uint32_t before = irq_counts[VEC_UART];
    outb(COM1 + UART_IER, 0x01);
    wait_for(VEC_UART, before + 1);
    puts("virq: uart rx interrupt: byte=");
    puthex(uart_byte);
    puts(" iir=");
    puthex(uart_iir);
    puts(uart_iir == 0xc4 ? " ok\n" : " FAIL\n");
    if (failed || uart_iir != 0xc4)
        finish(1);
    /* Nothing is left to wake it: the vCPU blocks, and costs nothing. */
    outb(COM1 + UART_IER, 0);
    puts("virq: halting with interrupts on and no source left\n");
    for (;;)
        __asm__ volatile("sti; hlt" ::: "memory");
}
