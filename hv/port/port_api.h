// What the port's C offers the hv module and itself: heap size, the nested REPL, the idle hook and waiting.
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "py/obj.h"

size_t port_heap_bytes(void);
void port_repl(void);
// The console's idle hook: a Python callable run while input is awaited (None to clear).
void port_set_idle(mp_obj_t fn);
// The console's next idle wait ends by this TSC at the latest, so the idle hook
// runs then (hv.wake_at); the earliest asked for wins until a wait takes it.
void port_wake_at(uint64_t tsc);
// A byte typed at the console, or -1; never blocks.
int mp_hal_stdin_poll_chr(void);
// Waits until the TSC reaches deadline_tsc while the partitions run, or less
// when Ctrl-C is pending (the caller raises it); never raises (mphalport.c).
void port_wait_until(uint64_t deadline_tsc);
// Whether a key arrived within the last second.
bool port_typing(void);
// The shell's input(): readline, TAB completing the first word from
// first_words and later ones from later_words (dicts keyed by qstr). A line
// holds at most PORT_LINE_MAX bytes: *overlong says that more were typed
// (and dropped), so the caller runs none of it.
#define PORT_LINE_MAX 4096
struct _vstr_t;
int port_input(struct _vstr_t *line, const char *prompt, mp_obj_t first_words, mp_obj_t later_words,
               bool *overlong);
// Around the TAB readline is handed (mphalport.c): the shell's words in place of __main__'s.
void port_completion_begin(void);
void port_completion_end(void);
// Whether readline may take key c: not a printable byte once the shell's line is full.
bool port_line_takes(int c);

// A time budget around user Python (hv.run_guarded): past deadline_tsc the VM's
// loop hook raises `overrun` in it. Guards nest; each end restores the one before.
struct port_guard {
    uint64_t deadline_tsc;
    mp_obj_t overrun;
    struct port_guard *outer;
};
void port_guard_begin(struct port_guard *guard, uint64_t deadline_tsc, mp_obj_t overrun);
void port_guard_end(struct port_guard *guard);
