/* The one call from the C core into the MicroPython port (hv/port/main.c). */
#pragma once

/* Starts MicroPython; not expected to return. */
void mp_port_main(void);
