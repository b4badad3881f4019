// The C library entry points MicroPython's core calls that a freestanding image must supply itself.
#include <stddef.h>
#include "printk.h"
#include "cpu.h"
