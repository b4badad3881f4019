/* The PC ports a linux partition's kernel probes (PIT, CMOS RTC, 8259s, ACPI sleep and reset), answered in C. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

struct partition;
struct exit_info;

/* One PIT counter as the guest programmed it (hv/vpit.c). */
struct vpit_counter {
    uint8_t mode;            /* 0-5, from the control word */
    uint8_t access;          /* 1 LSB, 2 MSB, 3 LSB then MSB */
    bool write_msb, read_msb;/* the LSB/MSB flip-flops */
    bool latched;
    uint16_t latch;          /* the latched (or half-read) count */
    uint32_t reload;         /* 1..0x10000 */
    uint64_t start_tsc;      /* when it was loaded; 0: not counting */
};

struct vplatform_state {
    struct vpit_counter pit[3];
    uint8_t port61;          /* gate 2 (bit 0) and speaker data (bit 1) as written */
    uint8_t cmos_index;
    uint8_t cmos_b;          /* status B as written: 24-hour, binary, interrupt enables */
    uint8_t cmos_ram[128];   /* the CMOS bytes that are not the clock */
};

/*
 * A port access by a linux partition that the UART and the exit port did
 * not take: emulated here, or answered as absent (reads all ones, writes
 * dropped), so no probe reaches policy. Returns true when the access is
 * done (advance RIP); *stop is set when the guest powered off or reset
 * itself, with the partition already stopped.
 */
bool vplatform_io(struct partition *p, const struct exit_info *e, uint32_t *value, bool *stop);
void vplatform_reset(struct partition *p);

/* The models, each for its own ports. */
uint8_t vpit_read(struct vplatform_state *s, uint16_t port);
void vpit_write(struct vplatform_state *s, uint16_t port, uint8_t value);
uint8_t vrtc_read(struct vplatform_state *s, uint16_t port);
void vrtc_write(struct vplatform_state *s, uint16_t port, uint8_t value);
bool vpic_port(uint16_t port);
uint8_t vpic_read(uint16_t port);
