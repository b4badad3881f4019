// mp_port_main: the MicroPython heap, the console loop (shell or raw REPL) and soft reset.
#include <stdint.h>
#include <string.h>
#include "py/compile.h"
#include "py/gc.h"
#include "py/runtime.h"
#include "py/stackctrl.h"
#include "py/builtin.h"
#include "py/mperrno.h"
#include "shared/readline/readline.h"
#include "shared/runtime/gchelper.h"
#include "shared/runtime/pyexec.h"
#include "page_alloc.h"
#include "printk.h"
#include "boot_links.h"
#include "port.h"
#include "port_api.h"

// MicroPython gets this much of RAM (an eighth, within bounds): enough for
// the manager and scripts typed at the console, little beside partitions.
#define HEAP_MIN (2u << 20)
#define HEAP_MAX (32u << 20)

// Raising the C stack limit below the real stack leaves room for the
// exception path and C callees below the point MicroPython checks.
#define STACK_MARGIN (16u << 10)

static uint8_t *heap_start;
static size_t heap_bytes;

static void heap_init(void)
{
    struct page_stats stats;
    page_alloc_stats(&stats);
    size_t bytes = (size_t)(stats.total_pages * PAGE_SIZE / 8);
    bytes = bytes < HEAP_MIN ? HEAP_MIN : bytes > HEAP_MAX ? HEAP_MAX : bytes;
    size_t pages = bytes / PAGE_SIZE;
    uint64_t addr = page_alloc_named("micropython heap", pages);
    if (addr == 0) {
        printk("taipan: no memory for the MicroPython heap (%lu KiB)\n", (unsigned long)(bytes >> 10));
        for (;;) {
            __asm__ volatile ("cli; hlt");
        }
    }
    heap_start = (uint8_t *)(uintptr_t)addr;
    heap_bytes = pages * PAGE_SIZE;
}

size_t port_heap_bytes(void)
{
    return heap_bytes;
}

// input() comes here: Ctrl-A on an empty line leaves the shell for the raw
// REPL, the way pyboard.py and run-tests.py expect a MicroPython board to answer.
int port_readline(vstr_t *line, const char *prompt)
{
    int ret = readline(line, prompt);
    if (ret == CHAR_CTRL_A && vstr_len(line) == 0) {
        pyexec_mode_kind = PYEXEC_MODE_RAW_REPL;
        mp_raise_type(&mp_type_SystemExit);
    }
    return ret;
}

/*
 * TAB completion for the shell. MicroPython's readline completes a word from
 * the names in __main__'s globals, so for the one TAB it is handling the
 * shell's words stand in for them: commands for the first word of the line,
 * partition names and options after it. The swap lasts from the moment
 * mp_hal_stdin_rx_chr hands readline a TAB until it asks for the next key,
 * so no Python code ever runs while __main__ looks like a word list.
 */
static struct {
    vstr_t *line;               // the line being edited, NULL outside port_input
    mp_obj_dict_t *first, *rest;
    mp_map_t saved;             // __main__'s own globals while swapped
    bool swapped;
    bool overlong;              // bytes past PORT_LINE_MAX were dropped from this line
} completion;

// A line's bytes and readline's 16 lines of history stay bounded whatever
// arrives: past the limit printable bytes are dropped (and not echoed), as a
// terminal's line discipline does; editing keys and Enter still work.
bool port_line_takes(int c)
{
    if (completion.line && completion.line->len >= PORT_LINE_MAX && c >= ' ' && c != 0x7f) {
        completion.overlong = true;
        return false;
    }
    return true;
}

void port_completion_begin(void)
{
    if (!completion.line || completion.swapped) {
        return;
    }
    const char *s = completion.line->buf;
    size_t len = completion.line->len;
    size_t i = 0;
    while (i < len && s[i] == ' ') {
        i++;
    }
    bool later_word = memchr(s + i, ' ', len - i) != NULL;
    completion.saved = MP_STATE_VM(dict_main).map;
    MP_STATE_VM(dict_main).map = (later_word ? completion.rest : completion.first)->map;
    completion.swapped = true;
}

void port_completion_end(void)
{
    if (completion.swapped) {
        MP_STATE_VM(dict_main).map = completion.saved;
        completion.swapped = false;
    }
}

// The shell's line: readline with completion from the shell's words; an
// exception (Ctrl-A's SystemExit) leaves __main__ as it was before passing on.
int port_input(vstr_t *line, const char *prompt, mp_obj_t first_words, mp_obj_t later_words,
               bool *overlong)
{
    completion.line = line;
    completion.first = MP_OBJ_TO_PTR(first_words);
    completion.rest = MP_OBJ_TO_PTR(later_words);
    completion.overlong = false;
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        int ret = port_readline(line, prompt);
        nlr_pop();
        port_completion_end();
        completion.line = NULL;
        *overlong = completion.overlong;
        return ret;
    }
    port_completion_end();
    completion.line = NULL;
    nlr_jump(nlr.ret_val);
}

// The friendly REPL nested under the shell's `py` command. It runs in
// __main__'s namespace, as a REPL does: called from the shell's function, the
// interpreter's globals would otherwise be the shell module's, and functions
// typed at the prompt could not see the names typed beside them.
void port_repl(void)
{
    mp_obj_dict_t *globals = mp_globals_get();
    mp_obj_dict_t *locals = mp_locals_get();
    mp_globals_set(&MP_STATE_VM(dict_main));
    mp_locals_set(&MP_STATE_VM(dict_main));
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        pyexec_friendly_repl();
        nlr_pop();
    } else {
        mp_globals_set(globals);
        mp_locals_set(locals);
        nlr_jump(nlr.ret_val);
    }
    mp_globals_set(globals);
    mp_locals_set(locals);
    if (pyexec_mode_kind == PYEXEC_MODE_RAW_REPL) {
        mp_raise_type(&mp_type_SystemExit);
    }
}

// One turn of the console: the raw REPL, or the shell (the bare REPL if the
// shell fails). Nonzero asks for a soft reboot.
static int console_turn(void)
{
    if (pyexec_mode_kind == PYEXEC_MODE_RAW_REPL) {
        return pyexec_raw_repl();
    }
    if (pyexec_frozen_module("main.py", true) & PYEXEC_FORCED_EXIT) {
        return 1;
    }
    if (pyexec_mode_kind != PYEXEC_MODE_RAW_REPL) {
        // The shell only returns to leave for the raw REPL; anything
        // else is a fault in it. Restarting it could fail the same way
        // forever, so the operator gets the bare REPL to look around.
        printk("taipan: the shell stopped; this is MicroPython's REPL (Ctrl-D restarts the shell)\n");
        return pyexec_friendly_repl();
    }
    return 0;
}

void mp_port_main(void)
{
    heap_init();
    mp_cstack_init_with_sp_here(BOOT_STACK_BYTES - STACK_MARGIN);
    gc_init(heap_start, heap_start + heap_bytes);

    for (;;) {
        mp_init();
        // The idle hook pointed into the heap just swept: until main.py sets
        // it again (the raw REPL never does), the console waits without it.
        port_set_idle(MP_OBJ_NULL);
        readline_init0();
        for (;;) {
            // pyexec's REPLs read their lines with no handler around them: a
            // line that outgrows the heap would otherwise end in nlr_jump_fail.
            nlr_buf_t nlr;
            if (nlr_push(&nlr) == 0) {
                int reboot = console_turn();
                nlr_pop();
                if (reboot) {
                    break;
                }
            } else {
                mp_printf(&mp_plat_print, "\ntaipan: the console's input raised ");
                mp_obj_print_exception(&mp_plat_print, MP_OBJ_FROM_PTR(nlr.ret_val));
                mp_printf(&mp_plat_print, "taipan: back to the shell\n");
                pyexec_mode_kind = PYEXEC_MODE_FRIENDLY_REPL;
            }
        }
        mp_printf(&mp_plat_print, "MPY: soft reboot\n");
        gc_sweep_all();
        mp_deinit();
    }
}

void gc_collect(void)
{
    gc_collect_start();
    gc_helper_collect_regs_and_stack();
    gc_collect_end();
}

void nlr_jump_fail(void *val)
{
    printk("taipan: MicroPython raised with no handler (%p); this CPU is halted\n", val);
    for (;;) {
        __asm__ volatile ("cli; hlt");
    }
}

mp_lexer_t *mp_lexer_new_from_file(qstr filename)
{
    (void)filename;
    mp_raise_OSError(MP_ENOENT);
}

mp_import_stat_t mp_import_stat(const char *path)
{
    (void)path;
    return MP_IMPORT_STAT_NO_EXIST;
}

// The hypervisor has no filesystem: open() answers as for a missing file.
static mp_obj_t port_open(size_t n_args, const mp_obj_t *args, mp_map_t *kwargs)
{
    (void)n_args;
    (void)args;
    (void)kwargs;
    mp_raise_OSError(MP_ENOENT);
}
MP_DEFINE_CONST_FUN_OBJ_KW(mp_builtin_open_obj, 1, port_open);
