/* The CMOS real-time clock: the time of day, read once at boot. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* What the RTC said at boot, decoded, and the TSC at the moment it was read. */
struct rtc_reading {
    bool valid;             /* false: no RTC answered, or it held an impossible date */
    uint16_t year;          /* full year (the RTC holds two digits: 2000-2099) */
    uint8_t month, day;     /* 1-based */
    uint8_t hour, minute, second;
    bool bcd;               /* status B bit 2 clear: the registers hold BCD */
    bool hour24;            /* status B bit 1 set: 24-hour mode */
    uint8_t status_b;       /* as read */
    uint64_t tsc;           /* when the reading was taken */
};

/* Reads the RTC (waiting out an update in progress) and keeps the reading. */
void rtc_init(void);
const struct rtc_reading *rtc_boot(void);
