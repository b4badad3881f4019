/* The exit fast path: CPUID, the virtual UART, port 0xf4, HLT, the APIC and IOAPIC pages, hypercalls and faults, handled in C. */
#include "cpu.h"
#include "cpus.h"
#include "spinlock.h"
#include "libc.h"
#include "mailbox.h"
#include "partition.h"
#include "printk.h"
#include "tsc.h"
#include "vcpu_state.h"
#include "vstrio.h"
#include "vlapic.h"
#include "vuart.h"

/* Port 0xf4: QEMU's isa-debug-exit, through which test kernels report a result. */
#define DEBUG_EXIT_PORT 0xf4

/* The hypercall ABI (docs/hypercalls.md): number in RAX, arguments in RBX and RCX. */
#define HC_CONSOLE_WRITE 0
#define HC_YIELD 1
#define HC_SHUTDOWN 2
#define HC_TSC_KHZ 3
#define HC_ERROR ((uint64_t)-1)
/* console_write's most bytes a call: the exit path holds its CPU while it copies, so a
 * guest asking for its whole memory gets a partial count and writes the rest later. */
#define CONSOLE_WRITE_MAX 4096u

#define RFLAGS_IF (1ull << 9)

static const struct vcpu_ops *ops;
/* vCPU creation and reset allocate pages and backend slots, and the VMX
 * backend fills a VMCS through file-wide state: one CPU at a time. */
static spinlock_t create_lock;

static const char *const exit_names[EXIT_KIND_COUNT] = {
    [EXIT_NONE] = "none", [EXIT_CPUID] = "cpuid", [EXIT_IO] = "io", [EXIT_HLT] = "hlt",
    [EXIT_HYPERCALL] = "hypercall", [EXIT_MSR_READ] = "msr_read", [EXIT_MSR_WRITE] = "msr_write",
    [EXIT_PAGE_FAULT] = "page_fault", [EXIT_TRIPLE_FAULT] = "triple_fault",
    [EXIT_PREEMPT] = "preempt", [EXIT_ENTRY_FAILED] = "entry_failed", [EXIT_OTHER] = "other",
    [EXIT_CR_WRITE] = "cr_write", [EXIT_XSETBV] = "xsetbv", [EXIT_INVALID_OPCODE] = "invalid_opcode",
    [EXIT_INTR_WINDOW] = "intr_window", [EXIT_CR_READ] = "cr_read",
    [EXIT_MMIO] = "mmio",
};

const char *partition_exit_name(enum exit_kind kind)
{
    return kind < EXIT_KIND_COUNT && exit_names[kind] ? exit_names[kind] : "other";
}

const struct vcpu_ops *vcpu_backend_select(void)
{
    const struct cpu_info *c = cpu_info_get();
    if (c->vmx && c->vmx_usable && c->ept && &vmx_ops != NULL) {
        return &vmx_ops;
    }
    if (c->svm && c->svm_usable && c->npt && &svm_ops != NULL) {
        return &svm_ops;
    }
    return NULL;
}

int partition_cpu_enable(void)
{
    /* The boot CPU chooses; every other CPU is the same model and follows. */
    if (cpu_current()->index == 0)
        ops = vcpu_backend_select();
    if (!ops)
        return -1;
    vfpu_host_init();   /* the entry stubs' XSAVE/XSETBV need this CPU's CR4.OSXSAVE */
    if (ops->cpu_enable() != 0) {
        if (cpu_current()->index == 0)
            ops = NULL;
        return -1;
    }
    return 0;
}

const struct vcpu_ops *partition_backend(void)
{
    return ops;
}

int partition_start(struct partition *p)
{
    if (p->state == PART_UNUSABLE) {
        return -1;
    }
    if (!partitions_trusted()) {
        snprintk(p->reason, sizeof(p->reason), "the partition table's signature has not been checked");
        return -1;
    }
    if (p->state == PART_RUNNING) {
        snprintk(p->reason, sizeof(p->reason), "already running");
        return -1;
    }
    if (!partition_backend()) {
        snprintk(p->reason, sizeof(p->reason), "this CPU has no usable VT-x+EPT or AMD-V+NPT");
        return -1;
    }
    partition_load_memory(p);
    p->vcpu.part = p;
    if (!p->vcpu_ready) {
        uint64_t f = spin_lock_irqsave(&create_lock);
        int rc = ops->vcpu_create(&p->vcpu);
        spin_unlock_irqrestore(&create_lock, f);
        if (rc != 0) {
            snprintk(p->reason, sizeof(p->reason), "its vCPU could not be created (see the console)");
            return -1;
        }
        p->vcpu_ready = true;
    } else {
        uint64_t f = spin_lock_irqsave(&create_lock);
        ops->vcpu_reset(&p->vcpu);
        spin_unlock_irqrestore(&create_lock, f);
    }
    p->uart = (struct vuart_state){ 0 };
    vdeny_reset(p);
    vplatform_reset(p);
    vioapic_reset(p);
    p->line_len = 0;
    p->upcall_pending = false;
    p->answer_ready = false;
    p->wake_tsc = 0;
    p->exit_code = 0;
    p->reason[0] = '\0';
    p->state = PART_RUNNING;
    p->starts++;
    return 0;
}

void partition_stop(struct partition *p, enum partition_state state, const char *reason)
{
    if (p->state == PART_UNUSABLE) {
        return;
    }
    p->state = state;
    p->upcall_pending = false;
    snprintk(p->reason, sizeof(p->reason), "%s", reason ? reason : "");
}

static bool guest_range(const struct partition *p, uint64_t gpa, uint64_t len)
{
    return gpa < p->desc->mem_size && len <= p->desc->mem_size - gpa;
}

/* Returns the event that ends the slice, or RUN_SLICE_END to keep running. */
static enum run_event hypercall(struct partition *p)
{
    struct guest_regs *r = &p->vcpu.regs;
    switch (r->rax) {
    case HC_CONSOLE_WRITE:
        if (!guest_range(p, r->rbx, r->rcx)) {
            r->rax = HC_ERROR;
            return RUN_SLICE_END;
        }
    {
        uint64_t n = r->rcx < CONSOLE_WRITE_MAX ? r->rcx : CONSOLE_WRITE_MAX;
        for (uint64_t i = 0; i < n; i++) {
            vuart_output(p, *(const uint8_t *)(uintptr_t)(p->desc->mem_host_base + r->rbx + i));
        }
        r->rax = n;
        return RUN_SLICE_END;
    }
    case HC_YIELD:
        r->rax = 0;
        return RUN_YIELDED;
    case HC_SHUTDOWN:
        p->exit_code = (uint32_t)r->rbx;
        partition_stop(p, PART_EXITED, "shutdown hypercall");
        return RUN_EXITED;
    case HC_TSC_KHZ:
        r->rax = tsc_khz();
        return RUN_SLICE_END;
    default:
        r->rax = HC_ERROR;
        return RUN_SLICE_END;
    }
}

/* The event an entry injected, in words. */
static void entered_event(const struct vcpu_event *ev, char *out, size_t size)
{
    if (!ev->valid) {
        snprintk(out, size, "no event injected");
        return;
    }
    const char *type = ev->type == VEVENT_EXT_INTR ? "interrupt" : ev->type == VEVENT_NMI ? "NMI"
                     : ev->type == VEVENT_EXCEPTION ? "exception" : "software event";
    snprintk(out, size, "%s %u injected", type, (unsigned)ev->vector);
}

static enum run_event fault(struct partition *p, const struct exit_info *e)
{
    char why[sizeof(p->reason)];
    switch (e->kind) {
    case EXIT_PAGE_FAULT:
        snprintk(why, sizeof(why), "%s of guest-physical %#llx at RIP %#llx: outside its memory",
                 e->write ? "write" : e->exec ? "execute" : "read",
                 (unsigned long long)e->gpa, (unsigned long long)e->rip);
        break;
    case EXIT_TRIPLE_FAULT: {
        /* The entry's injected event and RSP say whether the guest broke itself (its own
         * exception met a broken IDT or stack) or was handed an event it could not take. */
        char event[40];
        entered_event(&p->vcpu.entered, event, sizeof(event));
        snprintk(why, sizeof(why), "triple fault at RIP %#llx, RSP %#llx, %s", (unsigned long long)e->rip,
                 (unsigned long long)ops->reg_get(&p->vcpu, VREG_RSP), event);
        break;
    }
    case EXIT_ENTRY_FAILED:
        snprintk(why, sizeof(why), "VM entry failed: %s", e->what);
        break;
    default:
        snprintk(why, sizeof(why), "exit %#x at RIP %#llx", e->raw_reason, (unsigned long long)e->rip);
        break;
    }
    partition_stop(p, PART_FAULTED, why);
    return RUN_FAULTED;
}

static uint64_t all_ones(uint8_t size)
{
    return size >= 4 ? 0xffffffffull : (1ull << (size * 8)) - 1;
}

/* The UART's IRQ 4 line (ISA IRQ 4 is IOAPIC pin 4, as on a PC), the device models' lines and the APIC timer, as of `now`. */
void partition_poll_interrupts(struct partition *p, uint64_t now)
{
    vioapic_set_pin(p, VUART_IRQ, vuart_irq_line(p));
    vioapic_poll_lines(p);
    vlapic_timer_poll(&p->vcpu, now);
}

/* A halted vCPU wakes for an interrupt it takes (IF set) or an NMI (SDM vol. 3A, HLT). */
bool partition_wakes(struct partition *p, uint64_t now)
{
    if (now >= p->wake_tsc)
        return true;
    partition_poll_interrupts(p, now);
    return vevent_wakes_hlt(&p->vcpu, ops->reg_get(&p->vcpu, VREG_RFLAGS) & RFLAGS_IF);
}

/* HLT: the vCPU blocks until its next interrupt; the APIC timer's deadline is when one comes at the latest. */
static enum run_event halt(struct partition *p, uint64_t now)
{
    partition_poll_interrupts(p, now);
    if (vevent_wakes_hlt(&p->vcpu, ops->reg_get(&p->vcpu, VREG_RFLAGS) & RFLAGS_IF))
        return RUN_SLICE_END;
    uint64_t deadline = vlapic_deadline(&p->vcpu);
    p->wake_tsc = deadline ? deadline : UINT64_MAX;
    return RUN_HALTED;
}

static bool mmio_claimed(const struct partition *p, uint64_t gpa)
{
    for (uint32_t i = 0; i < p->mmio_claim_count; i++) {
        if (p->mmio_claims[i].first <= gpa && gpa <= p->mmio_claims[i].last)
            return true;
    }
    return false;
}

static enum run_event mmio(struct partition *p, struct exit_info *e)
{
    if (vlapic_mmio_owns(&p->vcpu, e->gpa) || (e->gpa & ~0xfffull) == VIOAPIC_BASE) {
        if (vmmio_emulate(&p->vcpu, e))
            return RUN_SLICE_END;
        char why[sizeof(p->reason)];
        snprintk(why, sizeof(why), "an access to the %s page at RIP %#llx the MMIO decoder does not know",
                 (e->gpa & ~0xfffull) == VIOAPIC_BASE ? "IOAPIC" : "APIC", (unsigned long long)e->rip);
        partition_stop(p, PART_FAULTED, why);
        return RUN_FAULTED;
    }
    /* A device model's range: the decoded access goes up to it, the slow path by design. */
    if (mmio_claimed(p, e->gpa)) {
        if (vmmio_decode_exit(&p->vcpu, e)) {
            /* Counted as what it turned out to be, beside the APIC pages' page faults. */
            p->exits[EXIT_PAGE_FAULT]--;
            p->exits[EXIT_MMIO]++;
            return RUN_UPCALL;
        }
        char why[sizeof(p->reason)];
        snprintk(why, sizeof(why), "an access to device MMIO at %#llx, RIP %#llx, the MMIO decoder does not know",
                 (unsigned long long)e->gpa, (unsigned long long)e->rip);
        partition_stop(p, PART_FAULTED, why);
        return RUN_FAULTED;
    }
    return fault(p, e);
}

static enum run_event port_io(struct partition *p, const struct exit_info *e)
{
    struct guest_regs *r = &p->vcpu.regs;
    uint32_t value = (uint32_t)r->rax;
    if (e->string && !vdeny_claimed(p, e->port)) {
        switch (vstrio_emulate(p, e)) {
        case VSTRIO_DONE:
            return RUN_SLICE_END;
        case VSTRIO_BAD_BUFFER: {
            /* The CPU would raise #PF; the vCPU cannot tell the guest CR2 yet. */
            char why[96];
            snprintk(why, sizeof(why), "string I/O at RIP %#llx: its buffer is not in its memory",
                     (unsigned long long)e->rip);
            partition_stop(p, PART_FAULTED, why);
            return RUN_FAULTED;
        }
        case VSTRIO_UNSUPPORTED:
            return RUN_UPCALL;
        }
    }
    if (e->string) {
        return RUN_UPCALL;   /* a claimed port: policy decides */
    }
    if (vuart_access(p, e->port, e->in, &value)) {
        if (e->in) {
            r->rax = (r->rax & ~0xffull) | (value & 0xff);
        }
        ops->advance_rip(&p->vcpu, e->insn_len);
        return RUN_SLICE_END;
    }
    if (e->port == DEBUG_EXIT_PORT && !e->in) {
        p->exit_code = value & (e->size == 1 ? 0xffu : e->size == 2 ? 0xffffu : 0xffffffffu);
        partition_stop(p, PART_EXITED, "wrote its exit code to port 0xf4");
        return RUN_EXITED;
    }
    bool stopped;
    if (vplatform_io(p, e, &value, &stopped)) {
        if (stopped)
            return p->state == PART_EXITED ? RUN_EXITED : RUN_FAULTED;
        if (e->in)
            r->rax = e->size == 4 ? value : (r->rax & ~(uint64_t)all_ones(e->size)) | value;
        ops->advance_rip(&p->vcpu, e->insn_len);
        return RUN_SLICE_END;
    }
    if (vdeny_claimed(p, e->port)) {
        return RUN_UPCALL;
    }
    /* No device there: what an unclaimed ISA port gives on a PC. */
    if (vdeny_count(p, e)) {
        mailbox_post(p, MAIL_DENIED);
    }
    if (e->in) {
        uint64_t mask = all_ones(e->size);
        r->rax = e->size == 4 ? mask : (r->rax & ~mask) | mask;
    }
    ops->advance_rip(&p->vcpu, e->insn_len);
    return RUN_SLICE_END;
}

enum run_event partition_run_slice(struct partition *p, uint64_t slice_tsc)
{
    if (p->state != PART_RUNNING || p->upcall_pending) {
        return RUN_NOT_RUNNING;
    }
    /* One TSC read an exit: it ends this run's time, checks the deadline and
     * starts the next run's time (each read is an emulator helper call). */
    uint64_t now = tsc_read();
    uint64_t deadline = now + slice_tsc;
    struct exit_info *e = &p->pending;
    for (;;) {
        uint64_t entered = now;
        /* The APIC timer's deadline ends the run too, so its interrupt comes on time. */
        partition_poll_interrupts(p, now);
        uint64_t timer = vlapic_deadline(&p->vcpu);
        uint64_t run_until = timer && timer < deadline ? timer : deadline;
        ops->vcpu_run(&p->vcpu, run_until, e);
        now = tsc_read();
        p->run_tsc += now - entered;
        p->exits[e->kind < EXIT_KIND_COUNT ? e->kind : EXIT_OTHER]++;
        enum run_event ev = RUN_SLICE_END;
        switch (e->kind) {
        case EXIT_CPUID:
            /* The cpuid_upcall bench knob sends the same exit through
             * MicroPython, so the two paths can be timed over one guest. */
            if (p->desc->flags & PT_FLAG_CPUID_UPCALL) {
                ev = RUN_UPCALL;
                break;
            }
            vcpuid_emulate(&p->vcpu);
            ops->advance_rip(&p->vcpu, e->insn_len);
            break;
        case EXIT_MSR_READ:
        case EXIT_MSR_WRITE:
            /* A partition with a user policy hands it the MSRs the virtual
             * CPU does not own, instead of #GP: the slow path by design. */
            if ((p->desc->flags & PT_FLAG_MSR_UPCALL) && !vmsr_known(e->msr)) {
                ev = RUN_UPCALL;
                break;
            }
            /* fall through */
        case EXIT_CR_WRITE:
        case EXIT_CR_READ:
        case EXIT_XSETBV:
            /* The virtual CPU's own state (hv/vcpu_state.c): emulated, or #GP injected. */
            if (!vcpu_state_exit(&p->vcpu, e)) {
                e->kind = EXIT_TRIPLE_FAULT;
                return fault(p, e);
            }
            break;
        case EXIT_INVALID_OPCODE:
            /* A fault: RIP stays on the instruction, as #UD leaves it. */
            if (!vevent_exception(&p->vcpu, VEC_UD, false, 0)) {
                e->kind = EXIT_TRIPLE_FAULT;
                return fault(p, e);
            }
            break;
        case EXIT_IO:
            ev = port_io(p, e);
            break;
        case EXIT_HLT:
            ops->advance_rip(&p->vcpu, e->insn_len);
            ev = halt(p, now);
            break;
        case EXIT_INTR_WINDOW:
            break;   /* the next entry injects what waited */
        case EXIT_HYPERCALL:
            ops->advance_rip(&p->vcpu, e->insn_len);
            ev = hypercall(p);
            break;
        case EXIT_PREEMPT:
            /* The APIC timer's deadline, not the slice's: run on. */
            if (run_until < deadline && now >= run_until && now < deadline)
                break;
            return RUN_SLICE_END;
        case EXIT_PAGE_FAULT:
            ev = mmio(p, e);
            break;
        case EXIT_TRIPLE_FAULT:
        case EXIT_ENTRY_FAILED:
            return fault(p, e);
        default:
            ev = RUN_UPCALL;
            break;
        }
        if (ev == RUN_UPCALL) {
            p->upcall_tsc = tsc_read();
            p->upcalls++;
            p->upcall_pending = true;
            return RUN_UPCALL;
        }
        if (ev != RUN_SLICE_END) {
            return ev;
        }
        if (now >= deadline) {
            return RUN_SLICE_END;
        }
    }
}

void partition_resolve(struct partition *p, enum upcall_action action, uint64_t value)
{
    if (!p->upcall_pending) {
        return;
    }
    const struct exit_info *e = &p->pending;
    struct guest_regs *r = &p->vcpu.regs;
    p->upcall_pending = false;
    if (action == UPCALL_STOP) {
        char why[96];
        snprintk(why, sizeof(why), "stopped by policy at exit %#x, RIP %#llx",
                 e->raw_reason, (unsigned long long)e->rip);
        partition_stop(p, PART_STOPPED, why);
        return;
    }
    switch (e->kind) {
    case EXIT_IO:
        if (e->in && !e->string) {
            uint64_t mask = all_ones(e->size);
            uint64_t v = action == UPCALL_EMULATE ? value & mask : mask;
            r->rax = e->size == 4 ? v : (r->rax & ~mask) | v;
        }
        break;
    case EXIT_MSR_READ:
    case EXIT_MSR_WRITE:
        /* Denied, an MSR the CPU does not have: #GP, RIP on the instruction. */
        if (action != UPCALL_EMULATE) {
            vevent_gp(&p->vcpu);
            return;
        }
        if (e->kind == EXIT_MSR_READ) {
            r->rax = (uint32_t)value;
            r->rdx = value >> 32;
        }
        break;
    case EXIT_MMIO:
        /* Denied, a read gets all ones (an absent device), a write is dropped. */
        vmmio_complete(&p->vcpu, e, action == UPCALL_EMULATE ? value : ~0ull);
        break;
    case EXIT_CPUID:
        /* Policy may only choose the answer the fast path gives: a guest
         * must see the same CPU whichever path its CPUID took. */
        if (action == UPCALL_EMULATE) {
            vcpuid_emulate(&p->vcpu);
        }
        break;
    default:
        if (e->insn_len == 0) {
            partition_stop(p, PART_FAULTED, "an exit the hypervisor cannot step past");
            return;
        }
        break;
    }
    ops->advance_rip(&p->vcpu, e->insn_len);
}
