// errno for the maths library; MicroPython itself uses its own MP_Exxx codes.
#pragma once
extern int errno;
#define EDOM 33
#define ERANGE 34
