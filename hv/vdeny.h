/* The default answer for ports no policy claims, given in C: reads all ones, writes dropped, repeats counted per port. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* Port ranges a Python policy or device model answers (hv.part_claim); the rest never leave C. */
#define VDENY_CLAIMS 16
/* Distinct ports counted one by one; denials beyond them are counted together. */
#define VDENY_KEYS 16

struct vdeny_key {
    uint16_t port;
    bool in;
    uint64_t count;
};

struct vdeny {
    struct { uint16_t first, last; } claims[VDENY_CLAIMS];
    uint32_t claim_count;
    struct vdeny_key keys[VDENY_KEYS];
    uint32_t key_count;
    uint64_t total;       /* every denial since the partition started */
    uint64_t uncounted;   /* ... of which the ones whose port found no room among keys */
    bool noticed;         /* the first denial since its start was posted to the manager */
};

struct partition;
struct exit_info;
bool vdeny_claimed(const struct partition *p, uint16_t port);
/* 0, or -1 when the claims are full. */
int vdeny_claim(struct partition *p, uint16_t first, uint16_t last);
/* Count one denial; true for the first since the partition started (worth one event). */
bool vdeny_count(struct partition *p, const struct exit_info *e);
/* A start forgets the counts (the claims are policy's and stay). */
void vdeny_reset(struct partition *p);
