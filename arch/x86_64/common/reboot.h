/* Whole-machine reset. */
#pragma once

/* Tries the reset control port, then the keyboard controller, then a triple fault. */
_Noreturn void machine_reboot(void);
