/* The journal: every partition's console lines, merged in the order they were completed. */
#pragma once
#include "console_ring.h"

#define JOURNAL_LINE_MAX 160

void journal_init(void);
void journal_line(const char *name, const char *line, uint32_t len);
struct console_ring *journal_ring(void);
