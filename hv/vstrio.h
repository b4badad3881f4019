/* String port I/O (INS/OUTS, with REP), emulated for the virtual UART and the default deny. */
#pragma once
#include "vcpu.h"

enum vstrio_result {
    VSTRIO_DONE,          /* up to a batch of elements moved; RIP past it once RCX reached 0 */
    VSTRIO_UNSUPPORTED,   /* not 64-bit code, or an address size the exit did not give */
    VSTRIO_BAD_BUFFER,    /* the buffer is not mapped in the guest or lies outside its memory */
};

struct partition;
enum vstrio_result vstrio_emulate(struct partition *p, const struct exit_info *e);
