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
    /* EXIT_MSR_* */
    uint32_t msr;
    /* EXIT_PAGE_FAULT */
    uint64_t gpa;
    bool read, write, exec;
    /* EXIT_ENTRY_FAILED */
    uint32_t error;          /* VM-instruction error number, or the SVM exit code (e.g. -1 VMEXIT_INVALID) */
    char what[160];          /* the failure in words: the error's meaning and the offending state */
};

struct vcpu {
    struct partition *part;
    struct guest_regs regs;
    void *arch;              /* the backend's own state (VMCS or VMCB and friends), from vcpu_create */
    bool launched;           /* VMX: VMLAUNCH done, next entry is VMRESUME */
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
};

/* The backend this CPU supports (VT-x+EPT or AMD-V+NPT), or NULL if none. */
const struct vcpu_ops *vcpu_backend_select(void);

/* Each backend's ops; vcpu_backend_select chooses between them by CPU features.
 * Weak, so an image linked with one backend only still links (the other reads as NULL). */
extern const struct vcpu_ops vmx_ops __attribute__((weak));
extern const struct vcpu_ops svm_ops __attribute__((weak));
