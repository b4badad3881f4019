// What the port's C offers the hv module: heap size and the nested REPL.
#pragma once
#include <stddef.h>

size_t port_heap_bytes(void);
void port_repl(void);
