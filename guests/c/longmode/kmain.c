/* The longmode guest's 64-bit part: reports EFER.LMA and checks that the CPU it runs on behaves as the manuals say. */
#include "kernel.h"

#define MSR_TSC 0x10u
#define MSR_FEATURE_CONTROL 0x3au
#define MSR_MTRRCAP 0xfeu
#define MSR_MISC_ENABLE 0x1a0u
#define MSR_PAT 0x277u
#define MSR_MTRR_DEF_TYPE 0x2ffu
#define MSR_VMX_BASIC 0x480u
#define MSR_EFER 0xc0000080u
#define MSR_STAR 0xc0000081u
#define MSR_LSTAR 0xc0000082u
#define MSR_FS_BASE 0xc0000100u
#define MSR_GS_BASE 0xc0000101u
#define MSR_KERNEL_GS_BASE 0xc0000102u
#define MSR_TSC_AUX 0xc0000103u
#define MSR_VM_CR 0xc0010114u
#define MSR_VM_HSAVE_PA 0xc0010117u

#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)
#define EFER_SVME (1ull << 12)
#define CR0_NE (1ull << 5)
#define CR0_NW (1ull << 29)
#define CR4_VMXE (1ull << 13)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define CR4_OSXSAVE (1ull << 18)

/* Set by the stubs in entry.S. */
volatile uint64_t recover_rip;
volatile int32_t fault_vector;
volatile uint32_t fault_error;
extern const uint64_t isr_table[32];
uint64_t longmode_roundtrip(uint64_t *efer_lme_clear);

static int failures, checks;
int amd;
const char *check_prefix = "longmode";

void putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20))
        ;
    outb(COM1, (uint8_t)c);
}

void puts(const char *s)
{
    while (*s)
        putc(*s++);
}

void puthex(uint64_t v)
{
    puts("0x");
    int started = 0;
    for (int i = 60; i >= 0; i -= 4) {
        unsigned d = (v >> i) & 0xf;
        if (d || started || i == 0) {
            putc((char)(d < 10 ? '0' + d : 'a' + d - 10));
            started = 1;
        }
    }
}

void putdec(int64_t v)
{
    char buf[24];
    int n = 0;
    if (v < 0) {
        putc('-');
        v = -v;
    }
    do {
        buf[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        putc(buf[--n]);
}

void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

/* Each probe arms recover_rip at the instruction's end, so a fault resumes there with its vector recorded. */
int rdmsr_probe(uint32_t msr, uint64_t *value)
{
    uint32_t lo = 0, hi = 0;
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%r11\n\tmov %%r11, recover_rip(%%rip)\n\trdmsr\n1:\n\tmovq $0, recover_rip(%%rip)"
                     : "+a"(lo), "+d"(hi) : "c"(msr) : "r11", "memory");
    if (value)
        *value = (uint64_t)hi << 32 | lo;
    return fault_vector;
}

int wrmsr_probe(uint32_t msr, uint64_t value)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%r11\n\tmov %%r11, recover_rip(%%rip)\n\twrmsr\n1:\n\tmovq $0, recover_rip(%%rip)"
                     : : "c"(msr), "a"((uint32_t)value), "d"((uint32_t)(value >> 32)) : "r11", "memory");
    return fault_vector;
}

uint64_t rdmsr(uint32_t msr)
{
    uint64_t v = 0;
    rdmsr_probe(msr, &v);
    return v;
}

#define CR_PROBE(n)                                                                                      \
    static int write_cr##n##_probe(uint64_t value)                                                       \
    {                                                                                                    \
        fault_vector = NO_FAULT;                                                                         \
        __asm__ volatile("lea 1f(%%rip), %%r11\n\tmov %%r11, recover_rip(%%rip)\n\tmov %0, %%cr" #n      \
                         "\n1:\n\tmovq $0, recover_rip(%%rip)" : : "r"(value) : "r11", "memory");        \
        return fault_vector;                                                                             \
    }                                                                                                    \
    static uint64_t read_cr##n(void)                                                                     \
    {                                                                                                    \
        uint64_t v;                                                                                      \
        __asm__ volatile("mov %%cr" #n ", %0" : "=r"(v));                                                \
        return v;                                                                                        \
    }
CR_PROBE(0)
CR_PROBE(4)

static int xsetbv_probe(uint32_t index, uint64_t value)
{
    fault_vector = NO_FAULT;
    __asm__ volatile("lea 1f(%%rip), %%r11\n\tmov %%r11, recover_rip(%%rip)\n\txsetbv\n1:\n\tmovq $0, recover_rip(%%rip)"
                     : : "c"(index), "a"((uint32_t)value), "d"((uint32_t)(value >> 32)) : "r11", "memory");
    return fault_vector;
}

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

void check(const char *name, int ok, const char *detail, uint64_t value)
{
    checks++;
    if (!ok)
        failures++;
    puts(check_prefix);
    puts(": check ");
    puts(name);
    puts(": ");
    puts(detail);
    puthex(value);
    puts(ok ? " ok\n" : " FAIL\n");
}

/* The check that the probe raised `vector` (NO_FAULT: none). */
void expect(const char *name, int got, int want)
{
    checks++;
    if (got != want)
        failures++;
    puts(check_prefix);
    puts(": check ");
    puts(name);
    puts(": vector=");
    putdec(got);
    puts(got == want ? " ok\n" : " FAIL\n");
}

struct idt_gate {
    uint16_t offset_lo, selector;
    uint8_t ist, type;
    uint16_t offset_mid;
    uint32_t offset_hi, reserved;
} __attribute__((packed));

static struct idt_gate idt[256] __attribute__((aligned(16)));

void idt_set(unsigned vector, uint64_t h)
{
    idt[vector] = (struct idt_gate){ (uint16_t)h, 0x08, 0, 0x8e, (uint16_t)(h >> 16), (uint32_t)(h >> 32), 0 };
}

static void idt_install(void)
{
    for (int i = 0; i < 32; i++)
        idt_set(i, isr_table[i]);
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } idtr = { sizeof(idt) - 1, (uint64_t)idt };
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

__attribute__((noreturn)) void finish(int code)
{
    outb(DEBUG_EXIT, (uint8_t)code);
    for (;;)
        __asm__ volatile("hlt");
}

void unexpected_fault(uint64_t vector, uint64_t rip)
{
    puts("longmode: unexpected exception vector=");
    putdec((int64_t)vector);
    puts(" rip=");
    puthex(rip);
    puts("\n");
    finish(99);
}

int has_bit(uint32_t leaf, uint32_t sub, int reg, int bit)
{
    uint32_t r[4];
    cpuid(leaf, sub, r);
    return (r[reg] >> bit) & 1;
}

static void check_msrs(void)
{
    uint64_t v = 0;
    expect("rdmsr of an MSR that does not exist (0x2)", rdmsr_probe(0x2, 0), VEC_GP);
    expect("wrmsr of an MSR that does not exist (0xc0001234)", wrmsr_probe(0xc0001234u, 1), VEC_GP);
    expect("rdmsr IA32_VMX_BASIC (no VMX offered)", rdmsr_probe(MSR_VMX_BASIC, 0), VEC_GP);
    if (amd) {
        expect("rdmsr IA32_FEATURE_CONTROL on AMD", rdmsr_probe(MSR_FEATURE_CONTROL, 0), VEC_GP);
        expect("rdmsr VM_CR on AMD", rdmsr_probe(MSR_VM_CR, &v), NO_FAULT);
        check("VM_CR says SVM disabled and locked", v == 0x18, "value=", v);
        expect("wrmsr VM_HSAVE_PA on AMD (no SVM offered)", wrmsr_probe(MSR_VM_HSAVE_PA, 0x1000), VEC_GP);
    } else {
        expect("rdmsr VM_CR on Intel", rdmsr_probe(MSR_VM_CR, 0), VEC_GP);
        expect("rdmsr VM_HSAVE_PA on Intel", rdmsr_probe(MSR_VM_HSAVE_PA, 0), VEC_GP);
        expect("rdmsr IA32_FEATURE_CONTROL on Intel", rdmsr_probe(MSR_FEATURE_CONTROL, &v), NO_FAULT);
        check("IA32_FEATURE_CONTROL locked with VMX off", v == 1, "value=", v);
        expect("rdmsr IA32_MISC_ENABLE", rdmsr_probe(MSR_MISC_ENABLE, &v), NO_FAULT);
        check("IA32_MISC_ENABLE fast strings", (v & 1) == 1, "value=", v);
        expect("wrmsr IA32_MISC_ENABLE (read-only)", wrmsr_probe(MSR_MISC_ENABLE, 0), VEC_GP);
    }
    uint64_t efer = rdmsr(MSR_EFER);
    expect("wrmsr EFER with reserved bit 2", wrmsr_probe(MSR_EFER, efer | 4), VEC_GP);
    expect("wrmsr EFER.SVME", wrmsr_probe(MSR_EFER, efer | EFER_SVME), VEC_GP);
    expect("wrmsr EFER clearing LME with paging on", wrmsr_probe(MSR_EFER, efer & ~EFER_LME), VEC_GP);
    check("EFER unchanged by the refused writes", rdmsr(MSR_EFER) == efer, "efer=", rdmsr(MSR_EFER));
    expect("wrmsr EFER.SCE", wrmsr_probe(MSR_EFER, efer | 1), NO_FAULT);
    check("EFER.SCE reads back", rdmsr(MSR_EFER) == (efer | 1), "efer=", rdmsr(MSR_EFER));
    wrmsr_probe(MSR_EFER, efer);

    expect("wrmsr FS_BASE", wrmsr_probe(MSR_FS_BASE, 0x123456789000ull), NO_FAULT);
    check("FS_BASE reads back", rdmsr(MSR_FS_BASE) == 0x123456789000ull, "fs_base=", rdmsr(MSR_FS_BASE));
    expect("wrmsr KERNEL_GS_BASE", wrmsr_probe(MSR_KERNEL_GS_BASE, 0xabc000ull), NO_FAULT);
    wrmsr_probe(MSR_GS_BASE, 0x5000);
    __asm__ volatile("swapgs" ::: "memory");
    uint64_t gs = rdmsr(MSR_GS_BASE), kgs = rdmsr(MSR_KERNEL_GS_BASE);
    __asm__ volatile("swapgs" ::: "memory");
    check("SWAPGS exchanges GS_BASE and KERNEL_GS_BASE", gs == 0xabc000ull && kgs == 0x5000, "gs_base=", gs);
    expect("wrmsr LSTAR non-canonical", wrmsr_probe(MSR_LSTAR, 0x0000800000000000ull), VEC_GP);
    expect("wrmsr LSTAR", wrmsr_probe(MSR_LSTAR, 0xffffffff81000000ull), NO_FAULT);
    check("LSTAR reads back", rdmsr(MSR_LSTAR) == 0xffffffff81000000ull, "lstar=", rdmsr(MSR_LSTAR));
    expect("wrmsr STAR", wrmsr_probe(MSR_STAR, 0x0023001000000000ull), NO_FAULT);
    check("STAR reads back", rdmsr(MSR_STAR) == 0x0023001000000000ull, "star=", rdmsr(MSR_STAR));

    check("PAT at its reset value", rdmsr(MSR_PAT) == 0x0007040600070406ull, "pat=", rdmsr(MSR_PAT));
    expect("wrmsr PAT with reserved type 2", wrmsr_probe(MSR_PAT, 0x0007040600070402ull), VEC_GP);
    expect("wrmsr PAT", wrmsr_probe(MSR_PAT, 0x0007010600070406ull), NO_FAULT);
    check("PAT reads back", rdmsr(MSR_PAT) == 0x0007010600070406ull, "pat=", rdmsr(MSR_PAT));
    check("MTRRcap: WC, no fixed or variable ranges", rdmsr(MSR_MTRRCAP) == 0x400, "mtrrcap=", rdmsr(MSR_MTRRCAP));
    check("MTRRdefType: enabled, write-back", rdmsr(MSR_MTRR_DEF_TYPE) == 0x806, "deftype=", rdmsr(MSR_MTRR_DEF_TYPE));
    expect("wrmsr MTRRdefType with FE (no fixed ranges)", wrmsr_probe(MSR_MTRR_DEF_TYPE, 0xc06), VEC_GP);
    expect("wrmsr MTRRcap (read-only)", wrmsr_probe(MSR_MTRRCAP, 0), VEC_GP);

    /* The TSC: a write sets this vCPU's TSC (an offset), RDTSC then counts on from there. */
    uint64_t target = 1ull << 44;
    expect("wrmsr IA32_TSC", wrmsr_probe(MSR_TSC, target), NO_FAULT);
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    uint64_t tsc = (uint64_t)hi << 32 | lo;
    check("RDTSC follows the written TSC", tsc >= target && tsc - target < (1ull << 38), "tsc=", tsc);
    if (has_bit(0x80000001u, 0, 3, 27)) {
        expect("wrmsr TSC_AUX", wrmsr_probe(MSR_TSC_AUX, 0x2a), NO_FAULT);
        uint32_t aux;
        __asm__ volatile("rdtscp" : "=a"(lo), "=d"(hi), "=c"(aux));
        check("RDTSCP returns TSC_AUX", aux == 0x2a, "aux=", aux);
        expect("wrmsr TSC_AUX with bits 63:32", wrmsr_probe(MSR_TSC_AUX, 1ull << 32), VEC_GP);
    }

    uint64_t apic = rdmsr(MSR_APIC_BASE);
    check("APIC_BASE: 0xfee00000, enabled, BSP", apic == 0xfee00900ull, "apic_base=", apic);
    check("CPUID.1:EDX.APIC with APIC_BASE.EN", has_bit(1, 0, 3, 9), "bit=", (uint64_t)has_bit(1, 0, 3, 9));
    expect("wrmsr APIC_BASE.EN = 0", wrmsr_probe(MSR_APIC_BASE, apic & ~(1ull << 11)), NO_FAULT);
    check("CPUID.1:EDX.APIC follows APIC_BASE.EN", !has_bit(1, 0, 3, 9), "bit=", (uint64_t)has_bit(1, 0, 3, 9));
    wrmsr_probe(MSR_APIC_BASE, apic);
    expect("wrmsr APIC_BASE with reserved bit 0", wrmsr_probe(MSR_APIC_BASE, apic | 1), VEC_GP);
    check("CPUID hides VMX", !has_bit(1, 0, 2, 5), "bit=", (uint64_t)has_bit(1, 0, 2, 5));
    check("CPUID hides SVM", !has_bit(0x80000001u, 0, 2, 2), "bit=", (uint64_t)has_bit(0x80000001u, 0, 2, 2));
    check("CPUID offers no ARCH_CAPABILITIES", !has_bit(7, 0, 3, 29), "bit=", (uint64_t)has_bit(7, 0, 3, 29));
    expect("rdmsr IA32_ARCH_CAPABILITIES (not offered)", rdmsr_probe(0x10a, 0), VEC_GP);
    expect("rdmsr IA32_MCG_CAP", rdmsr_probe(0x179, &v), NO_FAULT);
    check("IA32_MCG_CAP: no machine-check banks", v == 0, "value=", v);
}

static void check_crs(void)
{
    uint64_t cr0 = read_cr0(), cr4 = read_cr4();
    expect("mov cr4 with reserved bit 28", write_cr4_probe(cr4 | (1ull << 28)), VEC_GP);
    expect("mov cr4 setting VMXE", write_cr4_probe(cr4 | CR4_VMXE), VEC_GP);
    check("CR4.VMXE reads clear", !(read_cr4() & CR4_VMXE), "cr4=", read_cr4());
    expect("mov cr0 with bit 32", write_cr0_probe(cr0 | (1ull << 32)), VEC_GP);
    expect("mov cr0 with NW but not CD", write_cr0_probe(cr0 | CR0_NW), VEC_GP);
    expect("mov cr0 clearing NE", write_cr0_probe(cr0 & ~CR0_NE), NO_FAULT);
    check("CR0.NE reads as the guest wrote it", !(read_cr0() & CR0_NE), "cr0=", read_cr0());
    write_cr0_probe(cr0);
    check("CR0.NE set again", (read_cr0() & CR0_NE) != 0, "cr0=", read_cr0());
}

static void check_xcr0(void)
{
    if (!has_bit(1, 0, 2, 26)) {
        puts("longmode: no XSAVE on this CPU; XCR0 checks skipped\n");
        return;
    }
    uint64_t cr4 = read_cr4();
    check("CPUID.1:ECX.OSXSAVE clear before CR4.OSXSAVE", !has_bit(1, 0, 2, 27), "bit=", (uint64_t)has_bit(1, 0, 2, 27));
    expect("mov cr4 setting OSFXSR, OSXMMEXCPT, OSXSAVE", write_cr4_probe(cr4 | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE), NO_FAULT);
    check("CPUID.1:ECX.OSXSAVE follows CR4.OSXSAVE", has_bit(1, 0, 2, 27), "bit=", (uint64_t)has_bit(1, 0, 2, 27));
    check("XCR0 starts as x87 only", xgetbv0() == 1, "xcr0=", xgetbv0());
    expect("xsetbv 0 (x87 clear)", xsetbv_probe(0, 0), VEC_GP);
    expect("xsetbv 0x5 (AVX without SSE)", xsetbv_probe(0, 5), VEC_GP);
    expect("xsetbv bit 63", xsetbv_probe(0, 3 | (1ull << 63)), VEC_GP);
    expect("xsetbv XCR1", xsetbv_probe(1, 3), VEC_GP);
    check("XCR0 unchanged by the refused writes", xgetbv0() == 1, "xcr0=", xgetbv0());
    expect("xsetbv 0x3", xsetbv_probe(0, 3), NO_FAULT);
    check("XCR0 reads 0x3", xgetbv0() == 3, "xcr0=", xgetbv0());
    uint32_t r[4];
    cpuid(0xd, 0, r);
    check("CPUID.0xD.0:EBX is the size for XCR0 = 0x3", r[1] == 576, "ebx=", r[1]);
    if (has_bit(1, 0, 2, 28) && (r[0] & 4)) {
        expect("xsetbv 0x7 (AVX)", xsetbv_probe(0, 7), NO_FAULT);
        cpuid(0xd, 0, r);
        check("CPUID.0xD.0:EBX grows with AVX", r[1] == 832, "ebx=", r[1]);
    }
}

static void check_roundtrip(void)
{
    uint64_t lme_clear = 0;
    uint64_t outside = longmode_roundtrip(&lme_clear);
    check("EFER with paging off outside IA-32e mode: LME set, LMA clear",
          (outside & EFER_LME) && !(outside & EFER_LMA), "efer=", outside);
    check("EFER after clearing LME: LME and LMA clear", !(lme_clear & (EFER_LME | EFER_LMA)), "efer=", lme_clear);
    uint64_t efer = rdmsr(MSR_EFER);
    check("EFER.LMA again after re-entering IA-32e mode", (efer & EFER_LMA) != 0, "efer=", efer);
}

/* Whether the multiboot command line holds word. */
static int cmdline_has(uint32_t magic, uint32_t info, const char *word)
{
    if (magic != 0x2badb002u || !(*(volatile uint32_t *)(uint64_t)info & 4))
        return 0;
    const char *line = (const char *)(uint64_t)*(volatile uint32_t *)(uint64_t)(info + 16);
    for (const char *s = line; *s; s++) {
        if (s != line && s[-1] != ' ')
            continue;   /* whole words only: "devirq" is not "virq" */
        const char *a = s, *b = word;
        while (*b && *a == *b)
            a++, b++;
        if (!*b && (*a == 0 || *a == ' '))
            return 1;
    }
    return 0;
}

#define XMM_PATTERN 0x5a5a5a5a12345678ull
#define REPORTS 8
#define SPIN 1000000

static uint64_t xmm0_low(void)
{
    uint64_t v;
    __asm__ volatile("movq %%xmm0, %0" : "=r"(v));
    return v;
}

static uint32_t mxcsr(void)
{
    uint32_t v;
    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}

static void spin(void)
{
    for (volatile int i = 0; i < SPIN; i++)
        __asm__ volatile("pause");
}

/*
 * FPU state per vCPU, from both sides. "xcr0-set" takes XCR0 = x87|SSE(|AVX),
 * loads a pattern into XMM0 and MXCSR = 0 (every SIMD exception unmasked),
 * then checks they stay its own. "xcr0-probe" never writes XCR0, XMM0 or
 * MXCSR and checks it keeps seeing its reset values: XCR0 1, XMM0 0, MXCSR
 * 0x1f80, whatever runs beside it.
 */
static __attribute__((noreturn)) void fpu_mode(int setter)
{
    write_cr4_probe(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT | (has_bit(1, 0, 2, 26) ? CR4_OSXSAVE : 0));
    uint64_t want_xcr0 = 1;
    uint32_t want_mxcsr = 0x1f80;
    uint64_t want_xmm = 0;
    if (setter) {
        want_xcr0 = has_bit(1, 0, 2, 28) ? 7 : 3;
        xsetbv_probe(0, want_xcr0);
        want_xmm = XMM_PATTERN;
        __asm__ volatile("movq %0, %%xmm0" : : "r"(want_xmm));
        want_mxcsr = 0;
        __asm__ volatile("ldmxcsr %0" : : "m"(want_mxcsr));
    }
    int bad = 0;
    for (int n = 0; n < REPORTS; n++) {
        spin();
        uint64_t x = xgetbv0(), m = xmm0_low();
        uint32_t c = mxcsr();
        int ok = x == want_xcr0 && m == want_xmm && c == want_mxcsr;
        bad |= !ok;
        puts(setter ? "xcr0-set: " : "xcr0-probe: ");
        puts("xcr0=");
        puthex(x);
        puts(" xmm0=");
        puthex(m);
        puts(" mxcsr=");
        puthex(c);
        puts(ok ? " ok\n" : " FAIL\n");
    }
    finish(bad ? 1 : 0);
}

int checks_report(void)
{
    puts(check_prefix);
    puts(": ");
    putdec(checks - failures);
    puts(" of ");
    putdec(checks);
    puts(" checks passed\n");
    return failures ? 1 : 0;
}

void kmain(uint32_t magic, uint32_t info)
{
    uint32_t r[4];
    cpuid(0, 0, r);
    amd = r[1] == 0x68747541u;   /* "Auth" */
    idt_install();
    if (cmdline_has(magic, info, "xcr0-set"))
        fpu_mode(1);
    if (cmdline_has(magic, info, "xcr0-probe"))
        fpu_mode(0);
    if (cmdline_has(magic, info, "virq"))
        virq_mode();
    if (cmdline_has(magic, info, "devirq"))
        devirq_mode();
    uint64_t efer = 0;
    int vector = rdmsr_probe(MSR_EFER, &efer);
    puts("longmode: in 64-bit mode, EFER=");
    puthex(efer);
    puts(efer & EFER_LMA ? " LMA=1\n" : " LMA=0\n");
    check("rdmsr EFER in IA-32e mode", vector == NO_FAULT && (efer & EFER_LMA) && (efer & EFER_LME), "efer=", efer);
    check_msrs();
    check_crs();
    check_xcr0();
    check_roundtrip();
    finish(checks_report());
}
