// The time of day on the metal: the RTC's boot-time reading advanced by the TSC, and hv.clock() describing both.
#include <string.h>
#include "py/mphal.h"
#include "py/runtime.h"
#include "shared/timeutils/timeutils.h"
#include "rtc.h"
#include "tsc.h"
#include "wallclock.h"

/*
 * The RTC counts whole seconds and each read is two slow port accesses, so it
 * is read once (rtc_init, at boot) and the TSC carries the time from there.
 * A machine without an RTC starts its clock at 2000-01-01, which shows
 * plainly as wrong rather than as a plausible date.
 */
static uint64_t wallclock_boot_seconds(void)
{
    const struct rtc_reading *r = rtc_boot();
    if (!r->valid) {
        return TIMEUTILS_SECONDS_1970_TO_2000;
    }
    return timeutils_seconds_since_epoch(r->year, r->month, r->day, r->hour, r->minute, r->second);
}

uint64_t wallclock_ns(void)
{
    return wallclock_boot_seconds() * 1000000000u + tsc_to_ns(tsc_read() - rtc_boot()->tsc);
}

uint64_t mp_hal_time_ns(void)
{
    return wallclock_ns();
}

static void dict_put(mp_obj_t d, qstr key, mp_obj_t value)
{
    mp_obj_dict_store(d, MP_OBJ_NEW_QSTR(key), value);
}

static mp_obj_t str_obj(const char *s)
{
    return mp_obj_new_str(s, strlen(s));
}

// hv.clock() -> dict: the TSC rate and where it came from (tsc_khz, tsc_source, PIT and CPUID
// figures), and the CMOS clock read at boot (rtc: valid, the time, its epoch seconds).
static mp_obj_t wallclock_info(void)
{
    const struct tsc_calibration *cal = tsc_calibration_get();
    const struct rtc_reading *r = rtc_boot();
    mp_obj_t d = mp_obj_new_dict(0);
    dict_put(d, MP_QSTR_tsc_khz, mp_obj_new_int_from_ull(cal->khz));
    dict_put(d, MP_QSTR_tsc_source, str_obj(tsc_source_name(cal->source)));
    dict_put(d, MP_QSTR_pit_khz, mp_obj_new_int_from_ull(cal->pit_khz));
    dict_put(d, MP_QSTR_pit_error_ppm, mp_obj_new_int_from_uint(cal->pit_error_ppm));
    dict_put(d, MP_QSTR_cpuid_khz, mp_obj_new_int_from_ull(cal->cpuid_khz));
    dict_put(d, MP_QSTR_cpuid_leaf, cal->cpuid_khz ? str_obj(tsc_source_name(cal->cpuid_leaf)) : mp_const_none);
    mp_obj_t rtc = mp_obj_new_dict(0);
    dict_put(rtc, MP_QSTR_valid, mp_obj_new_bool(r->valid));
    dict_put(rtc, MP_QSTR_status_b, mp_obj_new_int(r->status_b));
    if (r->valid) {
        mp_obj_t t[6] = {
            mp_obj_new_int(r->year), mp_obj_new_int(r->month), mp_obj_new_int(r->day),
            mp_obj_new_int(r->hour), mp_obj_new_int(r->minute), mp_obj_new_int(r->second),
        };
        dict_put(rtc, MP_QSTR_boot, mp_obj_new_tuple(6, t));
        dict_put(rtc, MP_QSTR_bcd, mp_obj_new_bool(r->bcd));
        dict_put(rtc, MP_QSTR_hour24, mp_obj_new_bool(r->hour24));
    } else {
        dict_put(rtc, MP_QSTR_boot, mp_const_none);
    }
    dict_put(rtc, MP_QSTR_epoch, mp_obj_new_int_from_ull(wallclock_boot_seconds()));
    dict_put(d, MP_QSTR_rtc, rtc);
    return d;
}
MP_DEFINE_CONST_FUN_OBJ_0(hv_clock_obj, wallclock_info);
