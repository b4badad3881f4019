// The `hv` module's CPU and scheduling functions: the CPUs, the plans MicroPython writes, and the accounting read back.
#include <stdint.h>
#include <string.h>
#include "py/obj.h"
#include "py/runtime.h"
#include "cpus.h"
#include "mgmt.h"
#include "partition.h"
#include "sched.h"
#include "tsc.h"
#include "modhv.h"

static const char *const kind_names[] = {
    [SCHED_IDLE] = "idle", [SCHED_DEDICATED] = "dedicated",
    [SCHED_ROUND_ROBIN] = "round-robin", [SCHED_CYCLIC] = "cyclic",
};

static mp_obj_t str_obj(const char *s)
{
    return mp_obj_new_str(s, strlen(s));
}

static void store(mp_obj_t dict, qstr key, mp_obj_t value)
{
    mp_obj_dict_store(dict, MP_OBJ_NEW_QSTR(key), value);
}

static struct cpu *cpu_arg(mp_obj_t index)
{
    struct cpu *c = cpu_get((uint32_t)mp_obj_get_int(index));
    if (!c) {
        mp_raise_ValueError(MP_ERROR_TEXT("no such CPU"));
    }
    return c;
}

// An owner as Python names it: a partition index, or -1 for management.
static mp_obj_t owner_obj(int32_t owner)
{
    return mp_obj_new_int(owner == SCHED_MGMT ? -1 : owner);
}

// hv.cpus() -> [dict]: each CPU's index, APIC ID, state, why it failed, what runs on it now.
static mp_obj_t hv_cpus(void)
{
    mp_obj_t list = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < cpu_count(); i++) {
        struct cpu *c = cpu_get(i);
        mp_obj_t d = mp_obj_new_dict(0);
        store(d, MP_QSTR_index, mp_obj_new_int_from_uint(c->index));
        store(d, MP_QSTR_apic_id, mp_obj_new_int_from_uint(c->apic_id));
        store(d, MP_QSTR_state, str_obj(cpu_state_name(c->state)));
        store(d, MP_QSTR_problem, str_obj(c->problem));
        int32_t r = c->sched.running;
        store(d, MP_QSTR_running, r == SCHED_NOBODY ? mp_const_none : owner_obj(r));
        store(d, MP_QSTR_idle_us, mp_obj_new_int_from_ull(tsc_to_us(c->sched.idle_tsc)));
        mp_obj_list_append(list, d);
    }
    return list;
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_cpus_obj, hv_cpus);

// hv.plan_set(cpu, kind, frame_us, [(owner, us), ...]): the CPU follows it from its next window.
// kind: "idle", "dedicated", "round-robin" or "cyclic"; owner: a partition index or -1 for
// management (CPU 0 only). The rules (hv/py/plan.py) are checked before; this checks only
// what would break the C side.
static mp_obj_t hv_plan_set(size_t n_args, const mp_obj_t *args)
{
    (void)n_args;
    struct cpu *c = cpu_arg(args[0]);
    const char *kind = mp_obj_str_get_str(args[1]);
    struct sched_plan plan = { 0 };
    plan.kind = SCHED_IDLE;
    bool known = false;
    for (size_t k = 0; k < MP_ARRAY_SIZE(kind_names); k++) {
        if (strcmp(kind, kind_names[k]) == 0) {
            plan.kind = (enum sched_kind)k;
            known = true;
        }
    }
    if (!known) {
        mp_raise_ValueError(MP_ERROR_TEXT("unknown plan kind"));
    }
    plan.frame_us = (uint32_t)mp_obj_get_int(args[2]);
    size_t n;
    mp_obj_t *items;
    mp_obj_get_array(args[3], &n, &items);
    if (n > SCHED_WINDOWS_MAX) {
        mp_raise_ValueError(MP_ERROR_TEXT("more windows than a plan holds"));
    }
    for (size_t i = 0; i < n; i++) {
        mp_obj_t *w;
        mp_obj_get_array_fixed_n(items[i], 2, &w);
        mp_int_t owner = mp_obj_get_int(w[0]);
        mp_int_t us = mp_obj_get_int(w[1]);
        if (owner == -1) {
            if (c->index != 0) {
                mp_raise_ValueError(MP_ERROR_TEXT("management runs on CPU 0 only"));
            }
            plan.w[i].owner = SCHED_MGMT;
        } else if (owner < 0 || owner >= partition_count() || partition_get(owner)->cpu != c->index) {
            mp_raise_ValueError(MP_ERROR_TEXT("a window's partition does not run on this CPU"));
        } else {
            plan.w[i].owner = (int16_t)owner;
        }
        if (us < 0 || us > 10000000) {
            mp_raise_ValueError(MP_ERROR_TEXT("a window must be 0 to 10 s long"));
        }
        plan.w[i].us = (uint32_t)us;
    }
    plan.count = (uint32_t)n;
    sched_plan_set(c, &plan);
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(hv_plan_set_obj, 4, 4, hv_plan_set);

// hv.plan_get(cpu) -> dict: kind, frame_us, frames, idle_us, elapsed_us (since it was taken) and windows, each a dict of its
// owner, us and what it did: runs, run_us, preempts, halts, overruns, late_max_us, over_max_us.
static mp_obj_t hv_plan_get(mp_obj_t index)
{
    struct cpu *c = cpu_arg(index);
    struct sched_plan plan;
    static struct sched_window_stats stats[SCHED_WINDOWS_MAX];
    sched_plan_get(c, &plan, stats);
    mp_obj_t d = mp_obj_new_dict(0);
    store(d, MP_QSTR_kind, str_obj(plan.kind <= SCHED_CYCLIC ? kind_names[plan.kind] : "idle"));
    store(d, MP_QSTR_frame_us, mp_obj_new_int_from_uint(plan.frame_us));
    store(d, MP_QSTR_frames, mp_obj_new_int_from_ull(c->sched.frames));
    store(d, MP_QSTR_idle_us, mp_obj_new_int_from_ull(tsc_to_us(c->sched.idle_tsc)));
    store(d, MP_QSTR_elapsed_us, mp_obj_new_int_from_ull(tsc_to_us(tsc_read() - c->sched.adopted_tsc)));
    mp_obj_t windows = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < plan.count && i < SCHED_WINDOWS_MAX; i++) {
        const struct sched_window_stats *st = &stats[i];
        mp_obj_t w = mp_obj_new_dict(0);
        store(w, MP_QSTR_owner, owner_obj(plan.w[i].owner));
        store(w, MP_QSTR_us, mp_obj_new_int_from_uint(plan.w[i].us));
        store(w, MP_QSTR_runs, mp_obj_new_int_from_ull(st->runs));
        store(w, MP_QSTR_run_us, mp_obj_new_int_from_ull(tsc_to_us(st->run_tsc)));
        store(w, MP_QSTR_preempts, mp_obj_new_int_from_ull(st->preempts));
        store(w, MP_QSTR_halts, mp_obj_new_int_from_ull(st->halts));
        store(w, MP_QSTR_overruns, mp_obj_new_int_from_ull(st->overruns));
        store(w, MP_QSTR_late_max_us, mp_obj_new_int_from_ull(tsc_to_us(st->late_max_tsc)));
        store(w, MP_QSTR_over_max_us, mp_obj_new_int_from_ull(tsc_to_us(st->over_max_tsc)));
        mp_obj_list_append(windows, w);
    }
    store(d, MP_QSTR_windows, windows);
    return d;
}
MP_DEFINE_CONST_FUN_OBJ_1(hv_plan_get_obj, hv_plan_get);

// hv.plan_table(cpu) -> the plan the partition table carries for a CPU, in hv/py/plan.py's form:
// {"cpu", "kind", "frame_us", "windows": [(owner, us)]}, owner a partition index or "management",
// and the table's management_min_percent as "min_percent";
// None for a CPU beyond the table's cpu_count.
static mp_obj_t hv_plan_table(mp_obj_t index)
{
    const struct pt_header *h = partitions_table();
    mp_int_t cpu = mp_obj_get_int(index);
    if (!h || cpu < 0 || (uint32_t)cpu >= h->cpu_count || cpu >= PT_CPUS_MAX) {
        return mp_const_none;
    }
    const struct pt_cpu_plan *pl = &h->plans[cpu];
    mp_obj_t d = mp_obj_new_dict(0);
    store(d, MP_QSTR_cpu, mp_obj_new_int(cpu));
    store(d, MP_QSTR_kind, str_obj(pl->kind <= PT_PLAN_CYCLIC ? kind_names[pl->kind] : "idle"));
    store(d, MP_QSTR_frame_us, mp_obj_new_int_from_uint(pl->frame_us));
    mp_obj_t windows = mp_obj_new_list(0, NULL);
    for (uint32_t i = 0; i < pl->window_count && i < PT_WINDOWS_MAX; i++) {
        mp_obj_t t[2] = {
            pl->windows[i].owner == PT_OWNER_MANAGEMENT ? MP_OBJ_NEW_QSTR(MP_QSTR_management)
                                                        : mp_obj_new_int(pl->windows[i].owner),
            mp_obj_new_int_from_uint(pl->windows[i].us),
        };
        mp_obj_list_append(windows, mp_obj_new_tuple(2, t));
    }
    store(d, MP_QSTR_windows, windows);
    store(d, MP_QSTR_min_percent, mp_obj_new_int_from_uint(h->management_min_percent));
    return d;
}
MP_DEFINE_CONST_FUN_OBJ_1(hv_plan_table_obj, hv_plan_table);

// hv.sched_yield(): give the rest of management's window to CPU 0's partitions.
static mp_obj_t hv_sched_yield(void)
{
    mgmt_yield();
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_sched_yield_obj, hv_sched_yield);
