/* The few C library functions the freestanding image links (from MicroPython's string0.c). */
#pragma once
#include <stddef.h>

/*
 * Named libc.h, not string.h: -Ihv is on every include path, and a hv/string.h
 * would shadow <string.h> for MicroPython's own sources.
 */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
