/* The one interface between the vendor-neutral core and the VMX and SVM backends, hook by hook. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct partition;

/*
 * Guest general registers, saved and restored by each backend's generated
 * entry stub (offsets reach the stub through asm_offsets.c). RSP and RIP live
 * in the VMCS/VMCB; SVM also keeps RAX in the VMCB, and its backend copies it
 * here after every exit and back before every entry, so the core always
 * reads and writes guest RAX in this struct.
 */
struct guest_regs {
    uint64_t rax, rbx, rcx, rdx, rsi, rdi, rbp;
    uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
};

/* Why the guest stopped running, in vendor-neutral words. */
enum exit_kind {
    EXIT_NONE = 0,
    EXIT_CPUID,         /* insn_len set */
    EXIT_IO,            /* port, size, in, string, rep, insn_len set; the value is in regs.rax */
    EXIT_HLT,           /* insn_len set */
    EXIT_HYPERCALL,     /* VMCALL / VMMCALL; insn_len set; ABI in regs (docs/hypercalls.md) */
    EXIT_MSR_READ,      /* msr set (= regs.rcx); insn_len set */
    EXIT_MSR_WRITE,     /* msr set; value in regs.rdx:regs.rax; insn_len set */
    EXIT_PAGE_FAULT,    /* EPT violation / nested page fault: gpa, read, write, exec set */
    EXIT_TRIPLE_FAULT,  /* the guest reset itself by a triple fault (or SVM shutdown) */
    EXIT_PREEMPT,       /* the slice ended: VMX preemption timer, or the host timer on SVM */
    EXIT_ENTRY_FAILED,  /* VM entry failed: error and what set */
    EXIT_OTHER,         /* anything else: raw_reason says what */
    EXIT_CR_WRITE,      /* MOV to CR0/CR4 or LMSW the backend intercepts (VMX): cr, cr_value, insn_len set */
    EXIT_XSETBV,        /* XSETBV: index in regs.rcx, value in regs.rdx:regs.rax; insn_len set */
    EXIT_INVALID_OPCODE, /* a VMX or SVM instruction: the vCPU has neither, so the guest gets #UD */
    EXIT_INTR_WINDOW,   /* the guest can take the interrupt it could not before (VMX window / SVM VINTR) */
    EXIT_CR_READ,       /* MOV from CR8 (VMX): cr, cr_gpr (the destination's x86 number), insn_len set */
    EXIT_MMIO,          /* a decoded MOV on a device model's MMIO range: gpa, size (1-8), write, mmio_value, mmio_reg, insn_len */
    EXIT_KIND_COUNT
};

struct exit_info {
    enum exit_kind kind;
    uint32_t raw_reason;     /* VMX basic exit reason or SVM exit code (low 32 bits) */
    uint64_t rip;            /* guest RIP of the instruction that exited */
    uint32_t insn_len;       /* bytes to advance past it, where the kind says it is set */
    uint64_t qualification;  /* VMX exit qualification or SVM EXITINFO1, raw, for the log */
    /* EXIT_IO */
    uint16_t port;
    uint8_t size;            /* 1, 2 or 4 */
    bool in, string, rep;
    uint8_t addr_size;       /* string I/O: 2, 4 or 8 bytes of RSI/RDI/RCX, or 0 when unknown */
    uint8_t seg;             /* string I/O: OUTS's segment (enum vcpu_seg); INS always uses ES */
    /* EXIT_MSR_* */
    uint32_t msr;
    /* EXIT_CR_WRITE: which control register and the value the guest writes to it */
    uint8_t cr;
    uint8_t cr_gpr;
    uint64_t cr_value;
    /* EXIT_PAGE_FAULT */
    uint64_t gpa;
    bool read, write, exec;
    /* EXIT_MMIO: what a write stores; the register (x86 number) a read loads */
    uint64_t mmio_value;
    uint8_t mmio_reg;
    /* EXIT_ENTRY_FAILED */
    uint32_t error;          /* VM-instruction error number, or the SVM exit code (e.g. -1 VMEXIT_INVALID) */
    char what[160];          /* the failure in words: the error's meaning and the offending state */
};

/*
 * An event for the guest's IDT, in vendor-neutral words: what the next VM
 * entry injects (VMX: VM-entry interruption information, SVM: EVENTINJ).
 * The type numbers are the VMX ones; SVM's backend translates.
 */
enum vcpu_event_type {
    VEVENT_EXT_INTR = 0,      /* external interrupt: a vector the virtual APIC delivers */
    VEVENT_NMI = 2,
    VEVENT_EXCEPTION = 3,     /* hardware exception: #GP, #UD, #PF, ... */
    VEVENT_SOFT_INT = 4,      /* INT n */
    VEVENT_PRIV_SOFT_EXC = 5, /* INT1 (ICEBP) */
    VEVENT_SOFT_EXC = 6,      /* INT3, INTO */
};

struct vcpu_event {
    bool valid;
    uint8_t type;             /* enum vcpu_event_type */
    uint8_t vector;
    bool has_error;
    uint32_t error;
    uint32_t insn_len;        /* soft events: length of the instruction that raised it */
};

/* Segment registers in the order the CPU numbers them (VMX instruction information, SVM SEG). */
enum vcpu_seg { VSEG_ES, VSEG_CS, VSEG_SS, VSEG_DS, VSEG_FS, VSEG_GS };

/*
 * Architectural state the core reads and writes through the backend, in the
 * guest's own view (VMX: CR0/CR4 as their read shadows show them, EFER
 * without the bits VMX forces; SVM: EFER without SVME).
 */
enum vcpu_reg {
    VREG_CR0, VREG_CR3, VREG_CR4, VREG_EFER,
    VREG_FS_BASE, VREG_GS_BASE, VREG_KERNEL_GS_BASE,
    VREG_STAR, VREG_LSTAR, VREG_CSTAR, VREG_SFMASK,
    VREG_SYSENTER_CS, VREG_SYSENTER_ESP, VREG_SYSENTER_EIP,
    VREG_PAT, VREG_TSC_OFFSET, VREG_TSC_AUX,
    VREG_CPL,                 /* read only: the guest's current privilege level */
    VREG_CS_LONG,             /* read only: 1 while the guest runs 64-bit code (CS.L in IA-32e mode) */
    VREG_RFLAGS,              /* read only: IF decides whether an interrupt is taken at HLT, DF string I/O's direction */
    VREG_RSP,                 /* the one general register the VMCS/VMCB holds */
    VREG_COUNT
};

/*
 * The vCPU's FPU/SSE/AVX state and its XCR0, switched by the entry stubs
 * (offsets reach them through asm_offsets.c): x87 and SSE by FXSAVE/FXRSTOR
 * whatever XCR0 holds, the components above them by XSAVE/XRSTOR under the
 * guest's own XCR0; the host gets its XCR0, MXCSR and an empty x87 stack back.
 */
struct vcpu_fpu {
    uint8_t *area;           /* 64-byte aligned XSAVE area, standard form */
    uint64_t xcr0;           /* the guest's XCR0 */
    uint64_t host_xcr0;
    uint32_t host_mxcsr;
    uint32_t use_xsave;      /* 1 when the CPU has XSAVE (host CR4.OSXSAVE set), else FXSAVE only */
};

/* The per-vCPU MSRs no backend structure holds (hv/vmsr.c). */
struct vcpu_msrs {
    uint64_t apic_base;
    uint64_t tsc_adjust;
    uint64_t mtrr_def_type;
};

/*
 * The vCPU's virtual local APIC (hv/vlapic.c), xAPIC and x2APIC alike:
 * registers by their xAPIC offset, the timer as host-TSC deadlines.
 */
#define VLAPIC_LVT_COUNT 6        /* timer, thermal, performance, LINT0, LINT1, error */
struct vlapic {
    uint32_t id, tpr, ldr, dfr, svr, esr, icr_lo, icr_hi;
    uint32_t lvt[VLAPIC_LVT_COUNT];
    uint32_t isr[8], irr[8], tmr[8];   /* 256 bits each, vector n in word n / 32 */
    uint32_t timer_initial, timer_divide;
    uint64_t timer_start;     /* host TSC when the current count started from the initial count */
    uint64_t deadline;        /* host TSC of the timer's next interrupt, 0 when it is not armed */
    uint64_t tsc_deadline;    /* IA32_TSC_DEADLINE as the guest wrote it (its own TSC), 0 when disarmed */
    bool nmi_pending;
};

struct vcpu {
    struct partition *part;
    struct guest_regs regs;
    void *arch;              /* the backend's own state (VMCS or VMCB and friends), from vcpu_create */
    bool launched;           /* VMX: VMLAUNCH done, next entry is VMRESUME */
    struct vcpu_event event; /* injected at the next entry, then cleared by the backend */
    struct vcpu_event entered; /* what the last entry injected (valid false: nothing), for fault reports */
    struct vcpu_fpu fpu;
    struct vcpu_msrs msrs;
    struct vlapic lapic;
};

/*
 * A backend: all hooks run on the boot CPU with interrupts off. The core picks
 * one at boot from vcpu_backend_select() and never asks which it is.
 */
struct vcpu_ops {
    const char *name;        /* "VT-x+EPT" or "AMD-V+NPT" */

    /* Turn virtualization on for this CPU (VMXON / EFER.SVME and the host
     * save area). 0, or negative after printing why on the console. */
    int (*cpu_enable)(void);

    /* Allocate and fill the vCPU's control structure from the generated
     * template and the partition's descriptor (EPT/NPT root, bitmaps, boot
     * state); v->regs gets the boot registers. 0, or negative after printing why. */
    int (*vcpu_create)(struct vcpu *v);

    /* Put the vCPU back in its boot state (guest registers, control state),
     * as for a fresh start; the core reloads guest memory itself. */
    void (*vcpu_reset)(struct vcpu *v);

    /* Release what vcpu_create allocated. */
    void (*vcpu_destroy)(struct vcpu *v);

    /* Enter the guest and run it until one VM exit, or until the TSC passes
     * deadline_tsc (which then reads as EXIT_PREEMPT); fill *exit. */
    void (*vcpu_run)(struct vcpu *v, uint64_t deadline_tsc, struct exit_info *exit);

    /* Step the guest's RIP past the instruction that exited. */
    void (*advance_rip)(struct vcpu *v, uint32_t len);

    /* The guest RIP now, for the console and the logs. */
    uint64_t (*guest_rip)(struct vcpu *v);

    /* One piece of the guest's architectural state, as the guest sees it. */
    uint64_t (*reg_get)(struct vcpu *v, enum vcpu_reg r);

    /* Set it. The core has checked the value as the CPU would (hv/vcr.c,
     * hv/vmsr.c); the backend keeps its own structures consistent (VMX: the
     * IA-32e-mode-guest entry control follows EFER.LMA, CR0/CR4 keep their
     * forced bits under the read shadows, PAE PDPTEs are loaded). */
    void (*reg_set)(struct vcpu *v, enum vcpu_reg r, uint64_t value);
};

/* The backend this CPU supports (VT-x+EPT or AMD-V+NPT), or NULL if none. */
const struct vcpu_ops *vcpu_backend_select(void);

/* Each backend's ops; vcpu_backend_select chooses between them by CPU features.
 * Weak, so an image linked with one backend only still links (the other reads as NULL). */
extern const struct vcpu_ops vmx_ops __attribute__((weak));
extern const struct vcpu_ops svm_ops __attribute__((weak));
