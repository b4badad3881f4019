/* The longmode kernel's "devirq" mode: a Python device model's interrupt through IOAPIC pin 5 (edge, level, and from the model's tick while the vCPU halts), and an MMIO device model's registers loaded and stored at each width. */
#include "kernel.h"

/* configs/tests/devirq.toml: devices/irqdev.py on DEV_PORT with irq = DEV_PIN, devices/regs.py at MMIO_BASE. */
#define DEV_PORT 0x510
#define DEV_PIN 5
#define CMD_PULSE 1
#define CMD_HOLD 2
#define CMD_TICK 3
#define MMIO_BASE 0xfed10000ull
#define MMIO_ID 0x7a1a9a11u

#define RTE(pin) (0x10 + 2 * (pin))
#define RTE_REMOTE_IRR (1u << 14)
#define RTE_LEVEL (1u << 15)
#define RTE_MASKED (1u << 16)

static volatile uint32_t rte_seen, tmr_seen;

void device_irq(void)
{
    rte_seen = ioapic_read(RTE(DEV_PIN));
    tmr_seen = apic_read(APIC_TMR + (VEC_DEVICE / 32) * 0x10);
    /* The model's status register: reading it lowers its line, before the EOI as a driver does. */
    inb(DEV_PORT);
}

/* Interrupts on for a moment: whatever is pending is taken. */
static void window(void)
{
    __asm__ volatile("sti; nop; nop; nop; nop; cli" ::: "memory");
}

static uint32_t taken_after(uint8_t command, uint32_t before)
{
    puts("devirq: waiting for vector 0x45\n");
    outb(DEV_PORT, command);
    wait_for(VEC_DEVICE, before + 1);
    window();
    return irq_counts[VEC_DEVICE] - before;
}

static void interrupt_checks(void)
{
    ioapic_write(RTE(DEV_PIN) + 1, 0);                  /* destination: APIC 0 */
    ioapic_write(RTE(DEV_PIN), VEC_DEVICE);             /* edge, fixed, physical, unmasked */
    uint32_t taken = taken_after(CMD_PULSE, irq_counts[VEC_DEVICE]);
    check("edge pulse from a port write taken on vector 0x45, once", taken == 1, "count=", taken);
    check("edge pin: TMR clear", !((tmr_seen >> (VEC_DEVICE % 32)) & 1), "tmr=", tmr_seen);

    ioapic_write(RTE(DEV_PIN), VEC_DEVICE | RTE_LEVEL);
    taken = taken_after(CMD_HOLD, irq_counts[VEC_DEVICE]);
    uint32_t rte = ioapic_read(RTE(DEV_PIN));
    check("held level taken on vector 0x45, once (lowered before the EOI)", taken == 1, "count=", taken);
    check("level pin: TMR set", (tmr_seen >> (VEC_DEVICE % 32)) & 1, "tmr=", tmr_seen);
    check("level pin: remote IRR until the EOI", (rte_seen & RTE_REMOTE_IRR) && !(rte & RTE_REMOTE_IRR), "rte=", rte_seen);

    /* Masked, the edge reaches no one; an edge-triggered IOAPIC keeps no memory of it. */
    ioapic_write(RTE(DEV_PIN), VEC_DEVICE | RTE_MASKED);
    uint32_t before = irq_counts[VEC_DEVICE];
    outb(DEV_PORT, CMD_PULSE);
    window();
    ioapic_write(RTE(DEV_PIN), VEC_DEVICE);
    window();
    check("edge on a masked pin not delivered", irq_counts[VEC_DEVICE] == before, "count=", irq_counts[VEC_DEVICE] - before);

    /* From the model's tick on CPU 0, while this vCPU waits in HLT. */
    taken = taken_after(CMD_TICK, irq_counts[VEC_DEVICE]);
    check("edge from the model's tick wakes HLT on vector 0x45", taken == 1, "count=", taken);
}

/* Each width with the MOV form the MMIO decoder takes; the model answers. */
static uint8_t load8(uint64_t a) { uint8_t v; __asm__ volatile("movb (%1), %0" : "=a"(v) : "r"(a) : "memory"); return v; }
static uint16_t load16(uint64_t a) { uint16_t v; __asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static uint32_t load32(uint64_t a) { uint32_t v; __asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static uint64_t load64(uint64_t a) { uint64_t v; __asm__ volatile("movq (%1), %0" : "=r"(v) : "r"(a) : "memory"); return v; }
static void store64(uint64_t a, uint64_t v) { __asm__ volatile("movq %0, (%1)" : : "r"(v), "r"(a) : "memory"); }
static void store32_imm(uint64_t a) { __asm__ volatile("movl $0x12345678, (%0)" : : "r"(a) : "memory"); }
static void store8(uint64_t a, uint8_t v) { __asm__ volatile("movb %0, (%1)" : : "a"(v), "r"(a) : "memory"); }

/* devices/regs.py's pattern for an address it holds nothing for. */
static uint64_t pattern(uint32_t offset, unsigned size)
{
    uint64_t v = 0x0101010101010101ull * (offset & 0xff) ^ size;
    return size == 8 ? v : v & ((1ull << (8 * size)) - 1);
}

static void report(const char *what, uint64_t addr, uint64_t got, uint64_t want)
{
    puts("devirq: mmio ");
    puts(what);
    puts(" at ");
    puthex(addr);
    puts(" = ");
    puthex(got);
    puts(got == want ? " ok\n" : " FAIL\n");
    check(what, got == want, "value=", got);
}

static void mmio_checks(void)
{
    report("load32 of the ID", MMIO_BASE, load32(MMIO_BASE), MMIO_ID);
    report("load8", MMIO_BASE + 0x21, load8(MMIO_BASE + 0x21), pattern(0x21, 1));
    report("load16", MMIO_BASE + 0x42, load16(MMIO_BASE + 0x42), pattern(0x42, 2));
    report("load64", MMIO_BASE + 0x88, load64(MMIO_BASE + 0x88), pattern(0x88, 8));
    store64(MMIO_BASE + 0x100, 0x1122334455667788ull);
    report("store64 reads back", MMIO_BASE + 0x100, load64(MMIO_BASE + 0x100), 0x1122334455667788ull);
    report("load32 of the stored 64", MMIO_BASE + 0x100, load32(MMIO_BASE + 0x100), 0x55667788u);
    store32_imm(MMIO_BASE + 0x200);
    report("store32 of an immediate reads back", MMIO_BASE + 0x200, load32(MMIO_BASE + 0x200), 0x12345678u);
    store8(MMIO_BASE + 0xfff, 0xa5);
    report("store8 at the page's last byte reads back", MMIO_BASE + 0xfff, load8(MMIO_BASE + 0xfff), 0xa5);
}

__attribute__((noreturn)) void devirq_mode(void)
{
    check_prefix = "devirq";
    irq_setup();
    map_devices();   /* the IOAPIC's 2 MiB page holds the model's MMIO page too */
    apic_write(APIC_SVR, 0x100 | VEC_SPURIOUS);
    interrupt_checks();
    mmio_checks();
    int failed = checks_report();
    puts("devirq: done\n");
    finish(failed ? 1 : 0);
}
