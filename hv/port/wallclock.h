// The time of day on the metal: the RTC's boot-time reading advanced by the TSC.
#pragma once
#include <stdint.h>
#include "py/obj.h"

// Nanoseconds since 1970-01-01 00:00:00 UTC (2000-01-01 if no RTC answered at boot).
uint64_t wallclock_ns(void);
// hv.clock() -> dict: the TSC's rate and its source, and the RTC's reading at boot (docs/time.md).
MP_DECLARE_CONST_FUN_OBJ_0(hv_clock_obj);
