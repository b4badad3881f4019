// The port's half of MicroPython's `time` module, included by extmod/modtime.c (MICROPY_PY_TIME_INCLUDEFILE): the time of day from the boot-time RTC reading and the TSC.
#include "py/obj.h"
#include "shared/timeutils/timeutils.h"
#include "wallclock.h"

// localtime() with no argument. The RTC is taken to hold UTC, so gmtime is the same function.
static mp_obj_t mp_time_localtime_get(void) {
    timeutils_struct_time_t tm;
    timeutils_seconds_since_epoch_to_struct_time(wallclock_ns() / 1000000000u, &tm);
    mp_obj_t tuple[8] = {
        mp_obj_new_int(tm.tm_year),
        mp_obj_new_int(tm.tm_mon),
        mp_obj_new_int(tm.tm_mday),
        mp_obj_new_int(tm.tm_hour),
        mp_obj_new_int(tm.tm_min),
        mp_obj_new_int(tm.tm_sec),
        mp_obj_new_int(tm.tm_wday),
        mp_obj_new_int(tm.tm_yday),
    };
    return mp_obj_new_tuple(8, tuple);
}

// time(): whole seconds since 1970, as MicroPython's bare-metal ports give it (time_ns() has the fraction).
static mp_obj_t mp_time_time_get(void) {
    return mp_obj_new_int_from_ull(wallclock_ns() / 1000000000u);
}
