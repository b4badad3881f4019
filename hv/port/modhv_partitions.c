// The `hv` module's partition functions: what the manager, scheduler and policy need, nothing hot.
#include <stdint.h>
#include <string.h>
#include "py/nlr.h"
#include "py/obj.h"
#include "py/objstr.h"
#include "py/runtime.h"
#include "cpus.h"
#include "mailbox.h"
#include "mgmt.h"
#include "partition.h"
#include "sched.h"
#include "tsc.h"
#include "vlapic.h"
#include "vuart.h"
#include "modhv.h"

static const char *const state_names[] = {
    [PART_CREATED] = "created", [PART_RUNNING] = "running", [PART_STOPPED] = "stopped",
    [PART_FAULTED] = "faulted", [PART_EXITED] = "exited", [PART_UNUSABLE] = "unusable",
};

static const char *const restart_names[] = {
    [PT_RESTART_NEVER] = "never", [PT_RESTART_ON_FAULT] = "on-fault", [PT_RESTART_ALWAYS] = "always",
};

static mp_obj_t str_obj(const char *s)
{
    return mp_obj_new_str(s, strlen(s));
}

static void store(mp_obj_t dict, qstr key, mp_obj_t value)
{
    mp_obj_dict_store(dict, MP_OBJ_NEW_QSTR(key), value);
}

static struct partition *part_arg(mp_obj_t index)
{
    struct partition *p = partition_get(mp_obj_get_int(index));
    if (!p) {
        mp_raise_ValueError(MP_ERROR_TEXT("no such partition"));
    }
    return p;
}

// hv.part_count() -> number of partitions in the table.
static mp_obj_t hv_part_count(void)
{
    return mp_obj_new_int(partition_count());
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_part_count_obj, hv_part_count);

// The ports denied in C, the first `max` of them: [(port, "in"|"out", count)].
static mp_obj_t deny_keys(const struct partition *p, uint32_t max)
{
    const struct vdeny *d = &p->deny;
    mp_obj_t list = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < d->key_count && i < max; i++) {
        mp_obj_t t[3] = { mp_obj_new_int(d->keys[i].port), str_obj(d->keys[i].in ? "in" : "out"),
                          mp_obj_new_int_from_ull(d->keys[i].count) };
        mp_obj_list_append(list, mp_obj_new_tuple(3, t));
    }
    return list;
}

// hv.part_info(i) -> dict: name, state, reason, memory, exits by kind, CPU time, console counts,
// and the configured restart, restart_limit, slice_us, vcpus, cpu (its home CPU), cpus
// (the host CPUs it runs on, [cpu] today) and ports.
static mp_obj_t hv_part_info(mp_obj_t index)
{
    struct partition *p = part_arg(index);
    const struct pt_partition *d = p->desc;
    mp_obj_t info = mp_obj_new_dict(0);
    store(info, MP_QSTR_name, str_obj(d->name));
    store(info, MP_QSTR_state, str_obj(state_names[p->state]));
    store(info, MP_QSTR_reason, str_obj(p->reason));
    store(info, MP_QSTR_exit_code, mp_obj_new_int_from_uint(p->exit_code));
    store(info, MP_QSTR_memory, mp_obj_new_int_from_ull(d->mem_size));
    store(info, MP_QSTR_host_base, mp_obj_new_int_from_ull(d->mem_host_base));
    store(info, MP_QSTR_autostart, mp_obj_new_bool(d->flags & PT_FLAG_AUTOSTART));
    store(info, MP_QSTR_kind, str_obj(d->kind == PT_KIND_MULTIBOOT ? "multiboot"
                                      : d->kind == PT_KIND_LINUX ? "linux" : "raw"));
    store(info, MP_QSTR_starts, mp_obj_new_int_from_ull(p->starts));
    store(info, MP_QSTR_cpu_us, mp_obj_new_int_from_ull(tsc_to_us(p->run_tsc)));
    store(info, MP_QSTR_cpu, mp_obj_new_int_from_uint(p->cpu));
    store(info, MP_QSTR_upcalls, mp_obj_new_int_from_ull(p->upcalls));
    store(info, MP_QSTR_halts, mp_obj_new_int_from_ull(p->halts));
    store(info, MP_QSTR_interrupts, mp_obj_new_int_from_ull(p->interrupts));
    store(info, MP_QSTR_console_bytes, mp_obj_new_int_from_ull(p->console.written));
    store(info, MP_QSTR_console_dropped, mp_obj_new_int_from_ull(p->console.dropped));
    store(info, MP_QSTR_restart, str_obj(d->restart <= PT_RESTART_ALWAYS ? restart_names[d->restart] : "never"));
    store(info, MP_QSTR_restart_limit, mp_obj_new_int_from_uint(d->restart_limit));
    store(info, MP_QSTR_slice_us, mp_obj_new_int_from_uint(d->slice_us));
    store(info, MP_QSTR_vcpus, mp_obj_new_int_from_uint(d->vcpus));
    store(info, MP_QSTR_cpu, mp_obj_new_int_from_uint(d->cpu));
    // The config's spelling: one host CPU per vCPU, and one vCPU today.
    mp_obj_t cpu = mp_obj_new_int_from_uint(d->cpu);
    store(info, MP_QSTR_cpus, mp_obj_new_list(1, &cpu));
    // A single port as an int, a range as (first, last): the config's own two spellings.
    mp_obj_t ports = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < d->port_range_count && i < PT_MAX_PORT_RANGES; i++) {
        const struct pt_port_range *r = &d->port_ranges[i];
        if (r->first == r->last) {
            mp_obj_list_append(ports, mp_obj_new_int(r->first));
        } else {
            mp_obj_t pair[2] = { mp_obj_new_int(r->first), mp_obj_new_int(r->last) };
            mp_obj_list_append(ports, mp_obj_new_tuple(2, pair));
        }
    }
    store(info, MP_QSTR_ports, ports);
    mp_obj_t exits = mp_obj_new_dict(0);
    for (int k = EXIT_CPUID; k < EXIT_KIND_COUNT; k++) {
        if (p->exits[k]) {
            mp_obj_dict_store(exits, str_obj(partition_exit_name((enum exit_kind)k)), mp_obj_new_int_from_ull(p->exits[k]));
        }
    }
    store(info, MP_QSTR_exits, exits);
    // Port accesses answered by the default deny in C: the total, and per port (VDENY_KEYS of them).
    store(info, MP_QSTR_denied, mp_obj_new_int_from_ull(p->deny.total));
    store(info, MP_QSTR_denied_ports, deny_keys(p, VDENY_KEYS));
    return info;
}
MP_DEFINE_CONST_FUN_OBJ_1(hv_part_info_obj, hv_part_info);

// hv.part_start(i): its CPU loads its memory and makes it runnable; OSError with the reason if it can't.
static mp_obj_t hv_part_start(mp_obj_t index)
{
    struct partition *p = part_arg(index);
    if (partition_request(p, PART_REQ_START, "") != 0) {
        mp_raise_msg_varg(&mp_type_OSError, MP_ERROR_TEXT("%s: %s"), p->desc->name, p->reason);
    }
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_1(hv_part_start_obj, hv_part_start);

// hv.part_stop(i, reason): its CPU takes it out of the guest and stops it (state "stopped").
static mp_obj_t hv_part_stop(mp_obj_t index, mp_obj_t reason)
{
    struct partition *p = part_arg(index);
    if (partition_request(p, PART_REQ_STOP, mp_obj_str_get_str(reason)) != 0) {
        mp_raise_msg_varg(&mp_type_OSError, MP_ERROR_TEXT("%s: %s"), p->desc->name, p->reason);
    }
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_2(hv_part_stop_obj, hv_part_stop);

// The up-call a partition's CPU handed up, as policy sees it.
static mp_obj_t upcall_detail(const struct partition *p)
{
    const struct exit_info *e = &p->pending;
    mp_obj_t detail = mp_obj_new_dict(0);
    store(detail, MP_QSTR_kind, str_obj(partition_exit_name(e->kind)));
    store(detail, MP_QSTR_reason, mp_obj_new_int_from_uint(e->raw_reason));
    store(detail, MP_QSTR_rip, mp_obj_new_int_from_ull(e->rip));
    bool mmio = e->kind == EXIT_MMIO;
    store(detail, MP_QSTR_port, mp_obj_new_int(e->port));
    store(detail, MP_QSTR_addr, mp_obj_new_int_from_ull(mmio ? e->gpa : 0));
    store(detail, MP_QSTR_size, mp_obj_new_int(e->size));
    store(detail, MP_QSTR_input, mp_obj_new_bool(mmio ? !e->write : e->in));
    store(detail, MP_QSTR_msr, mp_obj_new_int_from_uint(e->msr));
    store(detail, MP_QSTR_value, mp_obj_new_int_from_ull(mmio ? e->mmio_value : p->vcpu.regs.rax));
    return detail;
}

static mp_obj_t mail_obj(const struct mail *m)
{
    static const char *const names[] = {
        [MAIL_UPCALL] = "upcall", [MAIL_EXITED] = "exited",
        [MAIL_FAULTED] = "faulted", [MAIL_TIMEOUT] = "timeout", [MAIL_DENIED] = "denied",
    };
    struct partition *p = partition_get(m->index);
    if (!p || m->event > MAIL_DENIED) {
        return MP_OBJ_NULL;
    }
    mp_obj_t detail;
    if (m->event == MAIL_UPCALL) {
        detail = upcall_detail(p);
    } else if (m->event == MAIL_DENIED) {
        detail = deny_keys(p, 1);
    } else if (m->event == MAIL_EXITED) {
        detail = mp_obj_new_int_from_uint(p->exit_code);
    } else {
        detail = str_obj(p->reason);
    }
    mp_obj_t t[3] = { mp_obj_new_int(m->index), str_obj(names[m->event]), detail };
    return mp_obj_new_tuple(3, t);
}

// Up-calls answered deny in C because the heap had no room for them (hv.heap_denials).
static uint32_t heap_denials;

// The oldest message, if it is an up-call: taken and answered deny without
// the heap, so no vCPU waits on a full heap. False for any other message.
static bool deny_upcall(const struct mail *m)
{
    struct partition *p = partition_get(m->index);
    if (m->event != MAIL_UPCALL || !p) {
        return false;
    }
    mailbox_drop();
    partition_answer(p, UPCALL_DENY, 0);
    heap_denials++;
    return true;
}

// hv.mailbox() -> [(i, event, detail)]: what the CPUs posted since the last call, oldest first:
// "upcall" (detail: the exit, for policy), "exited" (its exit code), "faulted" and "timeout" (why),
// "denied" (its first port denied in C since its start, as [(port, "in"|"out", count)]).
// A message leaves the box only once Python holds it. When the heap has no room
// for one, an up-call is answered deny in C (counted by hv.heap_denials) and
// any other message waits in the box for the next call.
static mp_obj_t hv_mailbox(void)
{
    mgmt_take_notice();
    struct mail m;
    nlr_buf_t nlr;
    mp_obj_t list = MP_OBJ_NULL;
    if (nlr_push(&nlr) == 0) {
        list = mp_obj_new_list(0, NULL);
        nlr_pop();
    } else {
        while (mailbox_peek(&m) && deny_upcall(&m)) {
        }
        nlr_jump(nlr.ret_val);
    }
    while (mailbox_peek(&m)) {
        if (nlr_push(&nlr) == 0) {
            mp_obj_t message = mail_obj(&m);
            if (message != MP_OBJ_NULL) {
                mp_obj_list_append(list, message);
            }
            nlr_pop();
            mailbox_drop();
        } else if (!deny_upcall(&m)) {
            break;
        }
    }
    return list;
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_mailbox_obj, hv_mailbox);

// hv.heap_denials() -> int: up-calls hv.mailbox answered deny in C since boot, because the
// MicroPython heap had no room for them. A small int: reading it needs no heap.
static mp_obj_t hv_heap_denials(void)
{
    return MP_OBJ_NEW_SMALL_INT(heap_denials);
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_heap_denials_obj, hv_heap_denials);

// hv.part_claim(i, first, last): ports first..last go up to policy (an "upcall" each) instead of
// the default deny in C; ValueError when the partition's claims are full.
static mp_obj_t hv_part_claim(mp_obj_t index, mp_obj_t first, mp_obj_t last)
{
    mp_int_t a = mp_obj_get_int(first), b = mp_obj_get_int(last);
    if (a < 0 || b > 0xffff || vdeny_claim(part_arg(index), (uint16_t)a, (uint16_t)b) != 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("bad port range, or the partition's claims are full"));
    }
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_3(hv_part_claim_obj, hv_part_claim);

// hv.part_claim_mmio(i, first, last): guest-physical first..last (outside its memory) goes up to
// policy, each decoded access an "mmio" upcall, instead of stopping the partition; ValueError
// when the range is empty or the partition's MMIO claims are full.
static mp_obj_t hv_part_claim_mmio(mp_obj_t index, mp_obj_t first, mp_obj_t last)
{
    struct partition *p = part_arg(index);
    uint64_t a = (uint64_t)mp_obj_get_int_truncated(first), b = (uint64_t)mp_obj_get_int_truncated(last);
    if (a > b || p->mmio_claim_count >= PART_MMIO_CLAIMS)
        mp_raise_ValueError(MP_ERROR_TEXT("bad MMIO range, or the partition's MMIO claims are full"));
    p->mmio_claims[p->mmio_claim_count].first = a;
    p->mmio_claims[p->mmio_claim_count].last = b;
    __atomic_store_n(&p->mmio_claim_count, p->mmio_claim_count + 1, __ATOMIC_RELEASE);
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_3(hv_part_claim_mmio_obj, hv_part_claim_mmio);

// hv.part_irq(i, pin, level): a device model's line to pin 0-23 of partition i's own IOAPIC:
// level 0 lowers it, 1 raises and holds it, 2 pulses it (one rising edge, even if the vCPU does
// not run between). Its CPU applies it before the vCPU's next entry, woken now if it halts.
// ValueError for another level, a pin out of range, or the UART's pin 4.
static mp_obj_t hv_part_irq(mp_obj_t index, mp_obj_t pin_in, mp_obj_t level_in)
{
    struct partition *p = part_arg(index);
    mp_int_t pin = mp_obj_get_int(pin_in), level = mp_obj_get_int(level_in);
    if (pin < 0 || pin >= VIOAPIC_PINS || pin == VUART_IRQ || level < VIOAPIC_LOW || level > VIOAPIC_PULSE)
        mp_raise_ValueError(MP_ERROR_TEXT("pin must be 0-23 but not the UART's 4, level 0, 1 or 2"));
    vioapic_drive(p, (unsigned)pin, (enum vioapic_drive)level);
    sched_kick(cpu_get(p->cpu));
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_3(hv_part_irq_obj, hv_part_irq);

// hv.part_resolve(i, action, value): policy's answer to an upcall: "emulate", "deny" or "stop";
// the partition's CPU applies it before its next entry.
static mp_obj_t hv_part_resolve(mp_obj_t index, mp_obj_t action, mp_obj_t value)
{
    const char *a = mp_obj_str_get_str(action);
    enum upcall_action act = strcmp(a, "emulate") == 0 ? UPCALL_EMULATE
                           : strcmp(a, "stop") == 0 ? UPCALL_STOP : UPCALL_DENY;
    partition_answer(part_arg(index), act, (uint64_t)mp_obj_get_int_truncated(value));
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_3(hv_part_resolve_obj, hv_part_resolve);

static mp_obj_t ring_bytes(struct console_ring *r, bool stream, mp_int_t max)
{
    vstr_t out;
    vstr_init_len(&out, (size_t)max);
    size_t n = stream ? console_ring_read(r, (uint8_t *)out.buf, (size_t)max)
                      : console_ring_tail(r, (uint8_t *)out.buf, (size_t)max);
    out.len = n;
    return mp_obj_new_bytes_from_vstr(&out);
}

// hv.console_read(i, max) -> bytes the guest wrote since the last read (the streaming cursor).
static mp_obj_t hv_console_read(mp_obj_t index, mp_obj_t max)
{
    return ring_bytes(&part_arg(index)->console, true, mp_obj_get_int(max));
}
MP_DEFINE_CONST_FUN_OBJ_2(hv_console_read_obj, hv_console_read);

// hv.console_tail(i, max) -> the last bytes its console ring holds.
static mp_obj_t hv_console_tail(mp_obj_t index, mp_obj_t max)
{
    return ring_bytes(&part_arg(index)->console, false, mp_obj_get_int(max));
}
MP_DEFINE_CONST_FUN_OBJ_2(hv_console_tail_obj, hv_console_tail);

// hv.console_input(i, data) -> how many bytes the guest's UART queue took.
static mp_obj_t hv_console_input(mp_obj_t index, mp_obj_t data)
{
    struct partition *p = part_arg(index);
    mp_buffer_info_t buf;
    mp_get_buffer_raise(data, &buf, MP_BUFFER_READ);
    size_t n = 0;
    while (n < buf.len && vuart_feed(p, ((const uint8_t *)buf.buf)[n])) {
        n++;
    }
    return mp_obj_new_int(n);
}
MP_DEFINE_CONST_FUN_OBJ_2(hv_console_input_obj, hv_console_input);

// hv.journal_read(max) -> the merged "[name] line" records written since the last read.
static mp_obj_t hv_journal_read(mp_obj_t max)
{
    return ring_bytes(journal_ring(), true, mp_obj_get_int(max));
}
MP_DEFINE_CONST_FUN_OBJ_1(hv_journal_read_obj, hv_journal_read);

// hv.journal_tail(max) -> the last merged "[name] line" records the journal still holds.
static mp_obj_t hv_journal_tail(mp_obj_t max)
{
    return ring_bytes(journal_ring(), false, mp_obj_get_int(max));
}
MP_DEFINE_CONST_FUN_OBJ_1(hv_journal_tail_obj, hv_journal_tail);

// hv.ptable() -> the partition table's bytes as linked, so the manager can check its signature.
static mp_obj_t hv_ptable(void)
{
    uint64_t size;
    const uint8_t *blob = partitions_blob(&size);
    return mp_obj_new_bytes(blob, (size_t)size);
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_ptable_obj, hv_ptable);

// hv.config_text() -> the active configuration as canonical TOML, as the toolchain signed it;
// "" if the header's pointer disagrees with the signed length before the text.
static mp_obj_t hv_config_text(void)
{
    uint64_t size;
    const uint8_t *blob = partitions_blob(&size);
    const struct pt_header *h = (const struct pt_header *)blob;
    uint64_t stored;
    if (size < sizeof(*h) || h->config_offset < sizeof(*h) + sizeof(stored) ||
        h->config_offset >= size || h->config_size >= size - h->config_offset) {
        return mp_obj_new_str("", 0);
    }
    memcpy(&stored, blob + h->config_offset - sizeof(stored), sizeof(stored));
    if (stored != h->config_size) {
        return mp_obj_new_str("", 0);
    }
    return mp_obj_new_str((const char *)blob + h->config_offset, (size_t)h->config_size);
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_config_text_obj, hv_config_text);

// hv.backend() -> "VT-x+EPT", "AMD-V+NPT" or None.
static mp_obj_t hv_backend(void)
{
    const struct vcpu_ops *ops = partition_backend();
    return ops ? str_obj(ops->name) : mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_backend_obj, hv_backend);

// hv.ptable_trust(): the manager has checked the table's signature; partitions may start.
static mp_obj_t hv_ptable_trust(void)
{
    partitions_trust();
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_ptable_trust_obj, hv_ptable_trust);

// hv.part_state(i) -> its state's name; cheap enough for the scheduler's every tick.
static mp_obj_t hv_part_state(mp_obj_t index)
{
    return MP_OBJ_NEW_QSTR(qstr_from_str(state_names[part_arg(index)->state]));
}
MP_DEFINE_CONST_FUN_OBJ_1(hv_part_state_obj, hv_part_state);
