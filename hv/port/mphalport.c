// The serial console and clock as MicroPython sees them, with Ctrl-C noticed while Python runs and partitions run while it sleeps.
#include <stdint.h>
#include "py/mphal.h"
#include "py/runtime.h"
#include "py/stream.h"
#include "py/mpstate.h"
#include "py/objexcept.h"
#include "shared/runtime/pyexec.h"
#include "mgmt.h"
#include "port.h"
#include "port_api.h"
#include "uart16550.h"
#include "tsc.h"

/*
 * Bytes read while polling for Ctrl-C during a long computation must not be
 * lost: they wait here until the REPL or input() asks for them.
 */
#define RX_RING 256
#define TYPING_MS 1000u
// The last stretch of a wait spins rather than yield (port_wait_until).
#define WAIT_SPIN_US 1000u
static uint8_t rx_ring[RX_RING];
static unsigned int rx_head, rx_tail;

static void rx_take(int c)
{
    if (c == mp_interrupt_char) {
        rx_head = rx_tail;  // what was typed before Ctrl-C is abandoned with the computation
        mp_sched_keyboard_interrupt();
        return;
    }
    if (rx_head - rx_tail < RX_RING) {
        rx_ring[rx_head++ % RX_RING] = (uint8_t)c;
    }
}

// The innermost running guard (port_api.h).
static struct port_guard *guard_now;

void port_guard_begin(struct port_guard *guard, uint64_t deadline_tsc, mp_obj_t overrun)
{
    guard->deadline_tsc = deadline_tsc;
    guard->overrun = overrun;
    guard->outer = guard_now;
    guard_now = guard;
}

void port_guard_end(struct port_guard *guard)
{
    guard_now = guard->outer;
}

void mp_hal_poll_input(void)
{
    int c;
    while ((c = uart_poll()) >= 0) {
        rx_take(c);
    }
}

// At a loop's backward jump (MICROPY_VM_HOOK_LOOP), inside the VM's own
// exception handler: raised here, the overrun is an exception of the running
// frame. Not through mp_sched_exception, which waits while the scheduler is
// locked, as it is when up-calls are answered from a scheduled callback. Past
// the deadline it is raised at every check, so code that catches it and loops
// on still ends.
void port_vm_loop_hook(void)
{
    mp_hal_poll_input();
    if (guard_now && tsc_read() >= guard_now->deadline_tsc) {
        mp_obj_exception_t *e = MP_OBJ_TO_PTR(guard_now->overrun);
        e->traceback_len = 0;
        nlr_raise(guard_now->overrun);
    }
}

static uint64_t last_key_tsc;

/*
 * Enter is CR from a terminal, LF from most scripts (socat, pyserial, pexpect's
 * sendline) and CR LF from some. Where lines are read, an LF is taken as CR,
 * and an LF right after a CR taken as Enter is the rest of that Enter: it is
 * dropped whoever reads next, so `console NAME` CR LF hands the partition no
 * stray LF. The raw REPL takes bytes as sent: its raw-paste flow control counts them.
 */
static bool enter_was_cr;

static int next_key(void)
{
    if (rx_head != rx_tail) {
        return rx_ring[rx_tail++ % RX_RING];
    }
    int c = uart_poll();
    if (c >= 0) {
        last_key_tsc = tsc_read();
    }
    return c;
}

int mp_hal_stdin_poll_chr(void)
{
    int c = next_key();
    if (c < 0) {
        return c;
    }
    bool rest_of_enter = c == '\n' && enter_was_cr;
    enter_was_cr = false;
    return rest_of_enter ? next_key() : c;
}

static int line_key(int c)
{
    if (pyexec_mode_kind == PYEXEC_MODE_RAW_REPL) {
        return c;
    }
    if (c == '\r') {
        enter_was_cr = true;
    }
    return c == '\n' ? '\r' : c;
}

// The UART holds only 16 bytes while a guest runs: when someone is typing,
// the scheduler keeps slices short enough that the FIFO cannot overflow.
bool port_typing(void)
{
    return last_key_tsc && tsc_read() - last_key_tsc < tsc_khz() * TYPING_MS;
}

MP_REGISTER_ROOT_POINTER(mp_obj_t taipan_idle_fn);

static bool mail_scheduled;
// When the console's next idle wait ends without a key or mail (port_wake_at).
static uint64_t wake_tsc = UINT64_MAX;

void port_wake_at(uint64_t tsc)
{
    if (tsc < wake_tsc) {
        wake_tsc = tsc;
    }
}

void port_set_idle(mp_obj_t fn)
{
    MP_STATE_VM(taipan_idle_fn) = fn;
    // A soft reset empties the interpreter's callback queue: nothing is scheduled any more.
    mail_scheduled = false;
}

// Runs the idle hook (the scheduler's tick) once, telling it whether a command
// or statement is running (then it answers policy but keeps announcements for
// the prompt). Its exceptions are logged and the console goes on; a Ctrl-C
// typed meanwhile comes back as the key itself.
static int idle_once(bool in_command)
{
    static bool busy;
    static unsigned int failures;
    mp_obj_t fn = MP_STATE_VM(taipan_idle_fn);
    if (fn == MP_OBJ_NULL || fn == mp_const_none || busy) {
        return -1;
    }
    busy = true;
    int key = -1;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        mp_call_function_1(fn, mp_obj_new_bool(in_command));
        mp_handle_pending(true);
        nlr_pop();
    } else if (mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(((mp_obj_base_t *)nlr.ret_val)->type),
                                       MP_OBJ_FROM_PTR(&mp_type_KeyboardInterrupt))) {
        key = mp_interrupt_char;
    } else if (++failures <= 3) {
        mp_printf(&mp_plat_print, "\ntaipan: the scheduler raised (guests keep their state):\n");
        mp_obj_print_exception(&mp_plat_print, MP_OBJ_FROM_PTR(nlr.ret_val));
        if (failures == 3) {
            mp_printf(&mp_plat_print, "taipan: further scheduler errors are not shown\n");
        }
    }
    busy = false;
    return key;
}

int mp_hal_stdin_rx_chr(void)
{
    port_completion_end();
    for (;;) {
        int c = mp_hal_stdin_poll_chr();
        if (c == '\t') {
            port_completion_begin();
        }
        if (c >= 0 && port_line_takes(c)) {
            return line_key(c);
        }
        if (c >= 0) {
            continue;
        }
        c = idle_once(false);
        if (c >= 0) {
            return c;
        }
        // Keys that came while the idle hook ran (a long policy call) were
        // taken off the UART into rx_ring by the VM hook: no key would wake
        // the wait below for them.
        if (rx_head != rx_tail) {
            continue;
        }
        // Nothing typed, nothing posted: CPU 0 is its partitions' until a key or
        // mail comes, or the time Python asked to be woken at (hv.wake_at).
        uint64_t wake = wake_tsc;
        wake_tsc = UINT64_MAX;
        mgmt_wait(wake, true);
    }
}

// The mailbox had news while MicroPython was busy with something else (a
// long command, a loop at `py`): the idle hook runs at the interpreter's
// next bytecode boundary, so up-calls are answered in time all the same.

static mp_obj_t mail_callback(mp_obj_t arg)
{
    (void)arg;
    mail_scheduled = false;
    idle_once(true);
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(mail_callback_obj, mail_callback);

void port_mail_arrived(void)
{
    if (!mail_scheduled && MP_STATE_VM(taipan_idle_fn) != MP_OBJ_NULL) {
        mail_scheduled = mp_sched_schedule(MP_OBJ_FROM_PTR(&mail_callback_obj), mp_const_none);
    }
}

uintptr_t mp_hal_stdio_poll(uintptr_t poll_flags)
{
    uintptr_t ret = 0;
    mp_hal_poll_input();
    if ((poll_flags & MP_STREAM_POLL_RD) && rx_head != rx_tail) {
        ret |= MP_STREAM_POLL_RD;
    }
    if (poll_flags & MP_STREAM_POLL_WR) {
        ret |= MP_STREAM_POLL_WR;
    }
    return ret;
}

mp_uint_t mp_hal_stdout_tx_strn(const char *str, size_t len)
{
    uart_write(str, len);
    return len;
}

mp_uint_t mp_hal_ticks_us(void)
{
    return tsc_to_us(tsc_read());
}

mp_uint_t mp_hal_ticks_ms(void)
{
    return tsc_to_us(tsc_read()) / 1000;
}

/*
 * The promise: returns once the TSC has reached deadline_tsc, or sooner when a
 * keyboard interrupt is pending (the caller raises it); never raises itself.
 * CPU 0's partitions run meanwhile: management gives its window back until
 * the deadline (mgmt_wait), a key or mail, and runs again at its first window
 * after that, so a wait may end up to one slice of CPU 0's partitions late.
 * The mailbox is answered on the way, as when the console waits for a key.
 * The last WAIT_SPIN_US spin, since waking takes a window of its own.
 */
void port_wait_until(uint64_t deadline_tsc)
{
    uint64_t spin = tsc_from_us(WAIT_SPIN_US);
    uint64_t spin_from = deadline_tsc > spin ? deadline_tsc - spin : 0;
    uint64_t now;
    while ((now = tsc_read()) < deadline_tsc) {
        mp_hal_poll_input();
        if (MP_STATE_MAIN_THREAD(mp_pending_exception) != MP_OBJ_NULL) {
            return;
        }
        if (now >= spin_from) {
            __asm__ volatile ("pause");
            continue;
        }
        if (idle_once(true) == mp_interrupt_char) {
            mp_sched_keyboard_interrupt();  // the hook consumed Ctrl-C: pend it again for the sleeper
            return;
        }
        mgmt_wait(spin_from, true);
    }
}

void mp_hal_delay_us(mp_uint_t us)
{
    port_wait_until(tsc_read() + tsc_from_us(us));
    mp_handle_pending(true);  // Ctrl-C ends a sleep with KeyboardInterrupt
}

void mp_hal_delay_ms(mp_uint_t ms)
{
    mp_hal_delay_us(ms * 1000);
}

uint32_t mp_hal_random_seed(void)
{
    return (uint32_t)(tsc_read() * 2654435761u);
}
