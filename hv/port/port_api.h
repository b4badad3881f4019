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
// A TSC by which the idle hook wants to run again even if no key or mail comes (a restart's
// back-off); taken by the next wait for a key, so the hook asks again while it still wants it.
void port_idle_wake(uint64_t tsc);
// A byte typed at the console, or -1; never blocks.
int mp_hal_stdin_poll_chr(void);
// Waits until the TSC reaches deadline_tsc while the partitions run, or less
// when Ctrl-C is pending (the caller raises it); never raises (mphalport.c).
void port_wait_until(uint64_t deadline_tsc);
// Whether a key arrived within the last second.
bool port_typing(void);
// The shell's input(): readline, TAB completing the first word from
// first_words and later ones from later_words (dicts keyed by qstr).
struct _vstr_t;
int port_input(struct _vstr_t *line, const char *prompt, mp_obj_t first_words, mp_obj_t later_words);
// Around the TAB readline is handed (mphalport.c): the shell's words in place of __main__'s.
void port_completion_begin(void);
void port_completion_end(void);
