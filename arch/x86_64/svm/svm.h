/* The SVM backend's private state shared by its setup (svm.c), VMCB (vmcb.c) and exit-path (svm_exit.c) files. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "libc.h"
#include "vcpu.h"
#include "vmcb_layout.h"

/*
 * The guest state VMRUN checks, as it was just before VMRUN: a VMEXIT_INVALID
 * may overwrite the VMCB's save area (QEMU writes the host's CR0 and EFER
 * back into it), so the diagnosis reads this copy instead.
 */
struct svm_entry_state {
    uint64_t efer, cr0, cr4, dr6, dr7;
    uint16_t cs_attrib;
};

/* One vCPU's backend state: its VMCB and what must happen at the next VMRUN. */
struct svm_vcpu {
    uint8_t *vmcb;           /* the 4 KiB VMCB page (physical = virtual) */
    uint64_t vmcb_pa;
    bool flush_tlb;          /* first run after create or reset: flush this ASID */
    uint64_t host_vmcb_pa;   /* the host VMCB of the CPU running this slice, taken at its start */
    struct svm_entry_state entered;
    /* TSC_AUX has no VMCB field: switched by hand around VMRUN where the CPU has it. */
    bool has_tsc_aux;
    uint64_t tsc_aux, host_tsc_aux;
    /* An injected NMI blocks the next until the guest's IRET (intercepted while set). */
    bool nmi_blocked;
};

/* Where the host's VMSAVE/VMLOAD state (FS, GS, TR, LDTR, syscall MSRs) is kept across VMRUN. */
/* This CPU's host VMCB (VMSAVE/VMLOAD of the host's FS, GS, TR and syscall MSRs). */
uint64_t svm_host_vmcb(void);

/* The VMCB is plain memory at fixed offsets; the CPU reads it at VMRUN and writes it at #VMEXIT. */
static inline uint64_t vmcb_read64(const uint8_t *vmcb, uint32_t offset)
{
    uint64_t v;
    memcpy(&v, vmcb + offset, sizeof(v));
    return v;
}

static inline void vmcb_write64(uint8_t *vmcb, uint32_t offset, uint64_t v)
{
    memcpy(vmcb + offset, &v, sizeof(v));
}

static inline uint32_t vmcb_read32(const uint8_t *vmcb, uint32_t offset)
{
    uint32_t v;
    memcpy(&v, vmcb + offset, sizeof(v));
    return v;
}

static inline void vmcb_write32(uint8_t *vmcb, uint32_t offset, uint32_t v)
{
    memcpy(vmcb + offset, &v, sizeof(v));
}

/* vmcb.c: the lifecycle hooks. */
int svm_vcpu_create(struct vcpu *v);
void svm_vcpu_reset(struct vcpu *v);
void svm_vcpu_destroy(struct vcpu *v);
void svm_advance_rip(struct vcpu *v, uint32_t len);
uint64_t svm_guest_rip(struct vcpu *v);
uint64_t svm_reg_get(struct vcpu *v, enum vcpu_reg r);
void svm_reg_set(struct vcpu *v, enum vcpu_reg r, uint64_t value);

/* svm_exit.c: one VMRUN and the decoded #VMEXIT. */
void svm_vcpu_run(struct vcpu *v, uint64_t deadline_tsc, struct exit_info *exit);
