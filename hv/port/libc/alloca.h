// alloca, which MicroPython uses for short-lived buffers on the C stack.
#pragma once
#define alloca(n) __builtin_alloca(n)
