/* The calls from the C core into the MicroPython port (hv/port/main.c, mphalport.c). */
#pragma once
#include <stdbool.h>

/* Starts MicroPython; not expected to return. */
void mp_port_main(void);

/* Whether someone typed at the console within the last second (CPU 0 then keeps its windows short). */
bool port_typing(void);

/* On CPU 0 with management suspended: the mailbox has news for MicroPython's next bytecode boundary. */
void port_mail_arrived(void);
