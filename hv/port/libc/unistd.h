// MicroPython's core includes <unistd.h> only for ssize_t and SEEK_*; there is no POSIX beneath Taipan.
#pragma once
#include <stddef.h>
typedef long ssize_t;

// Seek origins, which stream.c names in their POSIX spelling.
#define SEEK_SET 0
#define SEEK_CUR 1
#define SEEK_END 2
