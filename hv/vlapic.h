/* The virtual local APIC, the virtual IOAPIC and the MMIO decoder that reaches them: the interface the run loop and the event queue use. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include "vcpu.h"

struct partition;

/* Where the guest finds the two pages (the xAPIC's moves with APIC_BASE). */
#define VLAPIC_DEFAULT_BASE 0xfee00000ull
#define VIOAPIC_BASE 0xfec00000ull
#define VIOAPIC_PINS 24
/* The MSRs the APIC owns: x2APIC's registers and IA32_TSC_DEADLINE. */
#define VLAPIC_X2APIC_FIRST 0x800u
#define VLAPIC_X2APIC_LAST 0x8ffu
#define MSR_TSC_DEADLINE 0x6e0u

/* hv/vlapic.c: the APIC at RESET (and after APIC_BASE.EN goes from 1 to 0). */
void vlapic_reset(struct vcpu *v);
/* APIC_BASE written with a valid transition (hv/vmsr.c checked it): leaving
 * the disabled state starts from RESET's registers; x2APIC takes its ID form. */
void vlapic_base_changed(struct vcpu *v, uint64_t old, uint64_t value);
/* x2APIC's MSRs and IA32_TSC_DEADLINE: false when the CPU would raise #GP. */
bool vlapic_msr_read(struct vcpu *v, uint32_t msr, uint64_t *value);
bool vlapic_msr_write(struct vcpu *v, uint32_t msr, uint64_t value);
/* One 32-bit access to the xAPIC page at `offset`; false when the page is not the APIC's now. */
bool vlapic_mmio(struct vcpu *v, uint32_t offset, bool write, uint32_t *value);
/* Whether the xAPIC page answers at guest-physical gpa. */
bool vlapic_mmio_owns(const struct vcpu *v, uint64_t gpa);
/* Whether a destination (physical ID or broadcast, or logical ID) names this APIC (11.6.2). */
bool vlapic_is_destination(const struct vcpu *v, bool logical, uint32_t dest);
/* An interrupt from a source in the partition (IOAPIC pin, LVT, IPI): into IRR. */
void vlapic_accept(struct vcpu *v, uint8_t vector, bool level);
/* Timer deadlines that passed by host TSC `now` become interrupts. */
void vlapic_timer_poll(struct vcpu *v, uint64_t now);
/* The host TSC of the timer's next interrupt, or 0 when none is armed. */
uint64_t vlapic_deadline(const struct vcpu *v);
/* The vector the APIC would present now (IRR above PPR), or -1. */
int vlapic_pending(const struct vcpu *v);
/* The CPU took `vector`: IRR to ISR. */
void vlapic_ack(struct vcpu *v, uint8_t vector);

/* hv/vioapic.c: the partition's IOAPIC at RESET (every pin masked). */
void vioapic_reset(struct partition *p);
/* One 32-bit access to the IOAPIC page at `offset`. */
void vioapic_mmio(struct partition *p, uint32_t offset, bool write, uint32_t *value);
/* The level of pin `pin` now: an edge or a held level reaches the APIC. */
void vioapic_set_pin(struct partition *p, unsigned pin, bool level);
/* The APIC's EOI for a level-triggered vector: pins routed to it may fire again. */
void vioapic_eoi(struct partition *p, uint8_t vector);
/* A device model's line on `pin`, from CPU 0: lowered, held high, or pulsed (one edge). */
enum vioapic_drive { VIOAPIC_LOW, VIOAPIC_HIGH, VIOAPIC_PULSE };
void vioapic_drive(struct partition *p, unsigned pin, enum vioapic_drive how);
/* On the partition's CPU: the device models' lines to their pins, pulses taken once. */
void vioapic_poll_lines(struct partition *p);

/* hv/vmmio.c: the exit's MMIO instruction (MOV to or from memory) decoded,
 * the device's register read or written, RIP stepped. False: not an access
 * the decoder knows, the caller faults the partition. */
bool vmmio_emulate(struct vcpu *v, const struct exit_info *e);
/* An access to a device model's MMIO range decoded into e (kind EXIT_MMIO),
 * for policy; false: not an access the decoder knows. */
bool vmmio_decode_exit(struct vcpu *v, struct exit_info *e);
/* The answer to a decoded MMIO read, loaded into its register. */
void vmmio_complete(struct vcpu *v, const struct exit_info *e, uint64_t value);

/* hv/vevent.c: before an entry, the APIC's interrupt or NMI queued if the
 * guest can take it now (`open`: IF set and no interrupt shadow; `nmi_open`:
 * no NMI blocking either). True when one still waits: the backend asks for
 * an exit at the guest's next interrupt window. */
bool vevent_interrupt(struct vcpu *v, bool open, bool nmi_open);
/* Whether the APIC has an interrupt or NMI for the guest at all: when not,
 * the backend skips reading the guest's interruptibility (the common exit). */
static inline bool vevent_interrupt_waiting(const struct vcpu *v)
{
    return v->lapic.nmi_pending || vlapic_pending(v) >= 0;
}
/* Whether HLT would be woken at once: an interrupt the guest takes (IF set) or an NMI. */
bool vevent_wakes_hlt(struct vcpu *v, bool interrupts_on);
