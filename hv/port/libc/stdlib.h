// What MicroPython's core asks of <stdlib.h> on a machine with no C library.
#pragma once
#include <stddef.h>

#define abs(x) __builtin_abs(x)

_Noreturn void abort(void);
