// User Python from the system description, natively: its .mpy bytes made a module, and a call under a time budget.
#include <stdint.h>
#include "py/bc.h"
#include "py/nlr.h"
#include "py/objmodule.h"
#include "py/persistentcode.h"
#include "py/runtime.h"
#include "modhv.h"
#include "port_api.h"
#include "tsc.h"

// hv.load_module(name, mpy) -> a new module run from mpy-cross's bytes, as import would run
// a .mpy file. It is not entered in sys.modules: a reload makes a fresh one beside the old.
static mp_obj_t hv_load_module(mp_obj_t name_in, mp_obj_t mpy_in)
{
    mp_buffer_info_t mpy;
    mp_get_buffer_raise(mpy_in, &mpy, MP_BUFFER_READ);
    qstr name = mp_obj_str_get_qstr(name_in);
    mp_module_context_t *context = m_new_obj(mp_module_context_t);
    context->module.base.type = &mp_type_module;
    context->module.globals = MP_OBJ_TO_PTR(mp_obj_new_dict(MICROPY_MODULE_DICT_SIZE));
    mp_obj_dict_store(MP_OBJ_FROM_PTR(context->module.globals), MP_OBJ_NEW_QSTR(MP_QSTR___name__),
                      MP_OBJ_NEW_QSTR(name));
    mp_compiled_module_t compiled = { .context = context };
    mp_raw_code_load_mem(mpy.buf, mpy.len, &compiled);

    // The module's top level runs in its own globals; an exception restores the caller's.
    nlr_jump_callback_node_globals_locals_t saved;
    saved.globals = mp_globals_get();
    saved.locals = mp_locals_get();
    mp_globals_set(context->module.globals);
    mp_locals_set(context->module.globals);
    nlr_push_jump_callback(&saved.callback, mp_globals_locals_set_from_nlr_jump_callback);
    mp_call_function_0(mp_make_function_from_proto_fun(compiled.rc, context, NULL));
    nlr_pop_jump_callback(true);
    return MP_OBJ_FROM_PTR(context);
}
MP_DEFINE_CONST_FUN_OBJ_2(hv_load_module_obj, hv_load_module);

// hv.run_guarded(fn, args, budget_us) -> (True, fn(*args)) or (False, the exception it raised).
// Past the budget the interpreter raises RuntimeError in fn at a loop's backward jump (the VM's
// loop hook, port_vm_loop_hook), so code that runs forever ends there; MemoryError and any
// other exception end up here the same way, never in the caller.
static mp_obj_t hv_run_guarded(mp_obj_t fn, mp_obj_t args_in, mp_obj_t budget_in)
{
    size_t count;
    mp_obj_t *args;
    mp_obj_get_array(args_in, &count, &args);
    uint64_t budget_us = (uint64_t)mp_obj_get_int(budget_in);
    mp_obj_t overrun = mp_obj_new_exception_msg_varg(&mp_type_RuntimeError,
                                                     MP_ERROR_TEXT("ran past its %u ms budget"),
                                                     (unsigned int)(budget_us / 1000));
    struct port_guard guard;
    port_guard_begin(&guard, tsc_read() + budget_us * tsc_khz() / 1000, overrun);
    mp_obj_t result[2];
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        result[1] = mp_call_function_n_kw(fn, count, 0, args);
        nlr_pop();
        result[0] = mp_const_true;
    } else {
        result[0] = mp_const_false;
        result[1] = MP_OBJ_FROM_PTR(nlr.ret_val);
    }
    port_guard_end(&guard);
    return mp_obj_new_tuple(2, result);
}
MP_DEFINE_CONST_FUN_OBJ_3(hv_run_guarded_obj, hv_run_guarded);

// hv.wake_at(ticks): the console's next idle wait ends by that TSC even with no key or mail,
// so the scheduler's tick runs then (a restart's back-off, a scheduler module's next
// on_tick). The earliest asked for wins; each wait takes it, so a tick asks again while
// it still wants one.
static mp_obj_t hv_wake_at(mp_obj_t ticks)
{
    port_wake_at((uint64_t)mp_obj_get_int_truncated(ticks));
    return mp_const_none;
}
MP_DEFINE_CONST_FUN_OBJ_1(hv_wake_at_obj, hv_wake_at);
