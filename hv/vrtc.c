/* The CMOS RTC at ports 0x70/0x71: the host's time of day (its boot reading carried on by the TSC), in the format the guest chose. */
#include "rtc.h"
#include "tsc.h"
#include "vplatform.h"

#define PORT_INDEX 0x70
#define REG_SECONDS 0x00
#define REG_MINUTES 0x02
#define REG_HOURS 0x04
#define REG_WEEKDAY 0x06
#define REG_DAY 0x07
#define REG_MONTH 0x08
#define REG_YEAR 0x09
#define REG_A 0x0a
#define REG_B 0x0b
#define REG_C 0x0c
#define REG_D 0x0d
#define REG_CENTURY 0x32

#define A_DIVIDER_32K 0x26    /* 32.768 kHz time base, 1024 Hz rate: what firmware leaves */
#define B_24H 0x02
#define B_BINARY 0x04
#define B_WRITABLE 0x7e       /* not SET (bit 7): the clock is never stopped for writing */
#define D_VALID_RAM 0x80
#define HOUR_PM 0x80
#define SECONDS_PER_DAY 86400u
#define SECONDS_1970_TO_2000 946684800ull

/* Days since 1970-01-01 of a civil date, and back (the proleptic Gregorian calendar, eras of 400 years). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, unsigned *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (unsigned)(yoe + era * 400) + (*m <= 2);
}

static uint64_t now_seconds(void)
{
    const struct rtc_reading *r = rtc_boot();
    /* No host RTC: 2000-01-01, plainly wrong rather than plausibly so. */
    uint64_t boot = r->valid ? (uint64_t)days_from_civil(r->year, r->month, r->day) * SECONDS_PER_DAY
                               + r->hour * 3600u + r->minute * 60u + r->second
                             : SECONDS_1970_TO_2000;
    return boot + (tsc_read() - r->tsc) / (tsc_khz() * 1000);
}

static uint8_t encode(const struct vplatform_state *s, unsigned value)
{
    return s->cmos_b & B_BINARY ? (uint8_t)value : (uint8_t)(((value / 10) << 4) | (value % 10));
}

static uint8_t clock_register(const struct vplatform_state *s, uint8_t reg)
{
    uint64_t t = now_seconds();
    unsigned secs = (unsigned)(t % SECONDS_PER_DAY);
    int64_t days = (int64_t)(t / SECONDS_PER_DAY);
    unsigned y, m, d;
    civil_from_days(days, &y, &m, &d);
    switch (reg) {
    case REG_SECONDS: return encode(s, secs % 60);
    case REG_MINUTES: return encode(s, secs / 60 % 60);
    case REG_HOURS: {
        unsigned h = secs / 3600;
        if (s->cmos_b & B_24H)
            return encode(s, h);
        return (uint8_t)(encode(s, h % 12 ? h % 12 : 12) | (h >= 12 ? HOUR_PM : 0));
    }
    case REG_WEEKDAY: return encode(s, (unsigned)((days + 4) % 7) + 1);   /* 1970-01-01 was a Thursday; Sunday is 1 */
    case REG_DAY: return encode(s, d);
    case REG_MONTH: return encode(s, m);
    case REG_YEAR: return encode(s, y % 100);
    default: return encode(s, y / 100);   /* REG_CENTURY */
    }
}

uint8_t vrtc_read(struct vplatform_state *s, uint16_t port)
{
    if (port == PORT_INDEX)
        return 0xff;   /* the index register is write-only on PCs */
    uint8_t reg = s->cmos_index & 0x7f;
    switch (reg) {
    case REG_SECONDS: case REG_MINUTES: case REG_HOURS: case REG_WEEKDAY:
    case REG_DAY: case REG_MONTH: case REG_YEAR: case REG_CENTURY:
        return clock_register(s, reg);
    case REG_A:
        return A_DIVIDER_32K;   /* UIP clear: the time is computed, never mid-update */
    case REG_B:
        return s->cmos_b;
    case REG_C:
        return 0;               /* no interrupt flags: the RTC raises no interrupts here */
    case REG_D:
        return D_VALID_RAM;
    default:
        return s->cmos_ram[reg];
    }
}

void vrtc_write(struct vplatform_state *s, uint16_t port, uint8_t value)
{
    if (port == PORT_INDEX) {
        s->cmos_index = value;   /* bit 7, the NMI mask, has no NMI to mask here */
        return;
    }
    uint8_t reg = s->cmos_index & 0x7f;
    if (reg == REG_B)
        s->cmos_b = value & B_WRITABLE;
    else if (reg > REG_D && reg != REG_CENTURY)
        s->cmos_ram[reg] = value;
    /* Writes to the clock are dropped: the guest's clock is the host's. */
}
