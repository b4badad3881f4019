/* The CMOS real-time clock: the time of day, read once at boot through ports 0x70/0x71. */
#include <stdint.h>
#include "io.h"
#include "rtc.h"
#include "tsc.h"

#define CMOS_INDEX   0x70
#define CMOS_DATA    0x71

#define RTC_SECONDS  0x00
#define RTC_MINUTES  0x02
#define RTC_HOURS    0x04
#define RTC_DAY      0x07
#define RTC_MONTH    0x08
#define RTC_YEAR     0x09
#define RTC_STATUS_A 0x0a
#define RTC_STATUS_B 0x0b

#define STATUS_A_UIP    0x80  /* an update is under way: the time registers are changing */
#define STATUS_B_24H    0x02
#define STATUS_B_BINARY 0x04
#define HOUR_PM         0x80  /* 12-hour mode: the top bit of the hour register */

/*
 * An update takes under 2 ms once a second; on a machine with no RTC the
 * ports read 0xff and UIP never clears, so every wait is bounded.
 */
#define UIP_SPINS    2000000u
#define READ_TRIES   8u

static struct rtc_reading boot_reading;

/* Bit 7 of the index port is the NMI mask on PCs: leave NMIs enabled. */
static uint8_t cmos_read(uint8_t reg)
{
    outb(CMOS_INDEX, reg & 0x7f);
    return inb(CMOS_DATA);
}

struct rtc_raw {
    uint8_t sec, min, hour, day, mon, year;
};

static int rtc_wait_idle(void)
{
    for (uint32_t i = 0; i < UIP_SPINS; i++) {
        if (!(cmos_read(RTC_STATUS_A) & STATUS_A_UIP)) {
            return 1;
        }
    }
    return 0;
}

static void rtc_read_raw(struct rtc_raw *r)
{
    r->sec = cmos_read(RTC_SECONDS);
    r->min = cmos_read(RTC_MINUTES);
    r->hour = cmos_read(RTC_HOURS);
    r->day = cmos_read(RTC_DAY);
    r->mon = cmos_read(RTC_MONTH);
    r->year = cmos_read(RTC_YEAR);
}

static int rtc_raw_equal(const struct rtc_raw *a, const struct rtc_raw *b)
{
    return a->sec == b->sec && a->min == b->min && a->hour == b->hour &&
           a->day == b->day && a->mon == b->mon && a->year == b->year;
}

static uint8_t rtc_decode(uint8_t v, int bcd)
{
    return bcd ? (uint8_t)((v >> 4) * 10u + (v & 0x0f)) : v;
}

static int rtc_days_in_month(unsigned int year, unsigned int month)
{
    static const uint8_t days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return days[month - 1] + (month == 2 && leap);
}

void rtc_init(void)
{
    struct rtc_reading *t = &boot_reading;
    struct rtc_raw now, again;
    int stable = 0;

    /*
     * Registers read during an update may mix two seconds (59 then 00 with the
     * minute not yet carried): wait for UIP to clear, read everything, and
     * accept the reading only when a second pass gives the same values.
     */
    for (uint32_t i = 0; i < READ_TRIES && !stable; i++) {
        if (!rtc_wait_idle()) {
            break;
        }
        rtc_read_raw(&now);
        t->tsc = tsc_read();
        if (!rtc_wait_idle()) {
            break;
        }
        rtc_read_raw(&again);
        stable = rtc_raw_equal(&now, &again);
    }
    t->status_b = cmos_read(RTC_STATUS_B);
    t->valid = false;
    if (!stable) {
        return;
    }
    t->bcd = !(t->status_b & STATUS_B_BINARY);
    t->hour24 = (t->status_b & STATUS_B_24H) != 0;

    uint8_t hour = now.hour;
    int pm = 0;
    if (!t->hour24) {
        pm = (hour & HOUR_PM) != 0;
        hour &= (uint8_t)~HOUR_PM;
    }
    t->second = rtc_decode(now.sec, t->bcd);
    t->minute = rtc_decode(now.min, t->bcd);
    t->hour = rtc_decode(hour, t->bcd);
    t->day = rtc_decode(now.day, t->bcd);
    t->month = rtc_decode(now.mon, t->bcd);
    /* Two digits of year; the century register's index is in the FADT, which Taipan does not read here. */
    t->year = (uint16_t)(2000u + rtc_decode(now.year, t->bcd));
    if (!t->hour24) {
        /* 12-hour mode counts 12, 1, ..., 11: 12 AM is midnight, 12 PM is noon. */
        if (t->hour < 1 || t->hour > 12) {
            return;
        }
        t->hour = (uint8_t)(t->hour % 12u + (pm ? 12u : 0u));
    }
    if (t->second > 59 || t->minute > 59 || t->hour > 23 || t->month < 1 || t->month > 12 ||
        t->day < 1 || t->day > rtc_days_in_month(t->year, t->month) || t->year > 2099) {
        return;
    }
    t->valid = true;
}

const struct rtc_reading *rtc_boot(void)
{
    return &boot_reading;
}
