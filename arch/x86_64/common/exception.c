/* What happens when the hypervisor itself faults: a register dump on the serial console, then a halt. */
#include <stdint.h>
#include "cpu.h"
#include "idt.h"
#include "printk.h"
#include "uart16550.h"

struct exception_name {
    const char *mnemonic;
    const char *name;
};

/* Intel SDM vol. 3, table 6-1, plus AMD's #VC and #SX. */
static const struct exception_name exception_names[32] = {
    [0] = { "DE", "divide error" },
    [1] = { "DB", "debug" },
    [2] = { "NMI", "non-maskable interrupt" },
    [3] = { "BP", "breakpoint" },
    [4] = { "OF", "overflow" },
    [5] = { "BR", "bound range exceeded" },
    [6] = { "UD", "invalid opcode" },
    [7] = { "NM", "device not available" },
    [8] = { "DF", "double fault" },
    [9] = { "CSO", "coprocessor segment overrun" },
    [10] = { "TS", "invalid TSS" },
    [11] = { "NP", "segment not present" },
    [12] = { "SS", "stack-segment fault" },
    [13] = { "GP", "general protection" },
    [14] = { "PF", "page fault" },
    [16] = { "MF", "x87 floating-point error" },
    [17] = { "AC", "alignment check" },
    [18] = { "MC", "machine check" },
    [19] = { "XM", "SIMD floating-point" },
    [20] = { "VE", "virtualization exception" },
    [21] = { "CP", "control protection" },
    [28] = { "HV", "hypervisor injection" },
    [29] = { "VC", "VMM communication" },
    [30] = { "SX", "security exception" },
};

struct reg {
    const char *name;
    uint64_t value;
};

static void dump_regs(const struct reg *regs, int n)
{
    for (int i = 0; i < n; i++)
        printk("  %-6s %016lx%s", regs[i].name, (unsigned long)regs[i].value,
               i % 3 == 2 || i == n - 1 ? "\n" : "");
}

static volatile uint32_t depth;

_Noreturn void exception_dispatch(struct exc_frame *f)
{
    /* A fault while dumping must not recurse until the stack runs out: say so briefly and stop. */
    if (depth++) {
        static const char msg[] = "\r\ntaipan: nested CPU exception while reporting one; halted\r\n";
        uart_write(msg, sizeof(msg) - 1);
        cpu_halt();
    }

    const struct exception_name *en =
        f->vector < 32 && exception_names[f->vector].mnemonic ? &exception_names[f->vector] : NULL;
    printk("\ntaipan: CPU exception %lu #%s (%s) error=0x%lx\n", (unsigned long)f->vector,
           en ? en->mnemonic : "??", en ? en->name : "reserved", (unsigned long)f->error);

    const struct reg state[] = {
        { "RIP", f->rip }, { "CS", f->cs }, { "RFLAGS", f->rflags },
        { "RSP", f->rsp }, { "SS", f->ss }, { "CR0", read_cr0() },
        { "CR2", read_cr2() }, { "CR3", read_cr3() }, { "CR4", read_cr4() },
        { "RAX", f->rax }, { "RBX", f->rbx }, { "RCX", f->rcx },
        { "RDX", f->rdx }, { "RSI", f->rsi }, { "RDI", f->rdi },
        { "RBP", f->rbp }, { "R8", f->r8 }, { "R9", f->r9 },
        { "R10", f->r10 }, { "R11", f->r11 }, { "R12", f->r12 },
        { "R13", f->r13 }, { "R14", f->r14 }, { "R15", f->r15 },
    };
    dump_regs(state, sizeof(state) / sizeof(state[0]));
    printk("taipan: this CPU is halted\n");
    cpu_halt();
}
