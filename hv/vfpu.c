/* Per-vCPU FPU/SSE/AVX state: the XSAVE areas, the XCR0 values a guest may choose, and the host's side of the switch. */
#include "cpu.h"
#include "libc.h"
#include "partition.h"
#include "vcpu_state.h"

#define CPUID1_ECX_XSAVE (1u << 26)
#define CR4_OSXSAVE (1ull << 18)
#define XCR0_X87 0x1ull
#define XCR0_SSE 0x2ull
/* AMX tile state (XTILECFG, XTILEDATA) needs XFD and a permission protocol Taipan does not offer. */
#define XCR0_AMX 0x60000ull
/* The legacy region (512 bytes) and the XSAVE header (64) precede every extended component. */
#define XSAVE_LEGACY_HEADER 576u
#define FXSAVE_FCW 0
#define FXSAVE_MXCSR 24
#define FCW_RESET 0x37f
#define MXCSR_RESET 0x1f80u

/* One page per vCPU: enough for x87, SSE, AVX, MPX, AVX-512 and PKRU (2.7 KiB). */
#define VFPU_AREA_BYTES 4096u

static uint8_t areas[PARTITIONS_MAX][VFPU_AREA_BYTES] __attribute__((aligned(64)));
static bool host_ready;
static bool has_xsave;
static uint64_t host_xcr0, xcr0_allowed;
static uint32_t host_mxcsr;

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t)hi << 32 | lo;
}

uint32_t vfpu_area_size(uint64_t xcr0)
{
    uint32_t size = XSAVE_LEGACY_HEADER;
    for (uint32_t i = 2; i < 63; i++) {
        if (!(xcr0 & (1ull << i)))
            continue;
        uint32_t a, b, c, d;
        cpuid(0xd, i, &a, &b, &c, &d);
        if (b + a > size)
            size = b + a;
    }
    return size;
}

uint32_t vfpu_compacted_size(uint64_t xcr0)
{
    uint32_t size = XSAVE_LEGACY_HEADER;
    for (uint32_t i = 2; i < 63; i++) {
        if (!(xcr0 & (1ull << i)))
            continue;
        uint32_t a, b, c, d;
        cpuid(0xd, i, &a, &b, &c, &d);
        if (c & 2)          /* ECX bit 1: the component is 64-byte aligned when compacted */
            size = (size + 63) & ~63u;
        size += a;
    }
    return size;
}

void vfpu_host_init(void)
{
    uint32_t a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    /* Per CPU: XSETBV, XSAVE and XRSTOR need CR4.OSXSAVE in the host too; the
     * host itself keeps XCR0 at its RESET value (x87), using SSE by FXSR only. */
    if ((c & CPUID1_ECX_XSAVE) && !(read_cr4() & CR4_OSXSAVE)) {
        uint64_t cr4 = read_cr4() | CR4_OSXSAVE;
        __asm__ volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");
    }
    if (host_ready)
        return;
    /* Once: what every CPU of this machine shares. */
    host_ready = true;
    __asm__ volatile("stmxcsr %0" : "=m"(host_mxcsr));
    if (!(c & CPUID1_ECX_XSAVE)) {
        xcr0_allowed = XCR0_X87 | XCR0_SSE;   /* what FXSAVE covers */
        return;
    }
    has_xsave = true;
    host_xcr0 = xgetbv0();
    cpuid(0xd, 0, &a, &b, &c, &d);
    uint64_t offered = ((uint64_t)d << 32 | a) & ~XCR0_AMX;
    /* Drop the components that would not fit the area, from the top. */
    for (int i = 62; i >= 2 && vfpu_area_size(offered) > VFPU_AREA_BYTES; i--)
        offered &= ~(1ull << i);
    xcr0_allowed = offered;
}

uint64_t vfpu_xcr0_allowed(void)
{
    return xcr0_allowed;
}

void vfpu_reset(struct vcpu *v)
{
    vfpu_host_init();
    struct vcpu_fpu *f = &v->fpu;
    f->area = areas[v->part->index];
    /* An all-zero XSAVE header means every extended component in its
     * initial state; the legacy region holds FNINIT's x87 and RESET's MXCSR. */
    memset(f->area, 0, VFPU_AREA_BYTES);
    uint16_t fcw = FCW_RESET;
    uint32_t mxcsr = MXCSR_RESET;
    memcpy(f->area + FXSAVE_FCW, &fcw, sizeof(fcw));
    memcpy(f->area + FXSAVE_MXCSR, &mxcsr, sizeof(mxcsr));
    f->xcr0 = XCR0_X87;
    f->host_xcr0 = host_xcr0;
    f->host_mxcsr = host_mxcsr;
    f->use_xsave = has_xsave;
}
