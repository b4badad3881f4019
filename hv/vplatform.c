/* A linux partition's port space: the PC devices it probes, the ACPI sleep and reset ports, the rest is hv/vdeny.c's: absent unless claimed. */
#include "libc.h"
#include "partition.h"
#include "vplatform.h"

#define PIT_FIRST 0x40
#define PIT_LAST 0x43
#define PORT_61 0x61
#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71

void vplatform_reset(struct partition *p)
{
    p->platform = (struct vplatform_state){ 0 };
    p->platform.cmos_b = 0x02;   /* 24-hour BCD: what PC firmware leaves */
}

static uint32_t all_ones(uint8_t size)
{
    return size >= 4 ? 0xffffffffu : (1u << (size * 8)) - 1;
}

bool vplatform_io(struct partition *p, const struct exit_info *e, uint32_t *value, bool *stop)
{
    struct vplatform_state *s = &p->platform;
    uint16_t port = e->port;
    uint8_t byte = (uint8_t)*value;
    *stop = false;
    if (p->desc->kind != PT_KIND_LINUX)
        return false;
    if (!e->in && port == PT_ACPI_SLEEP_CONTROL_PORT && (byte & PT_ACPI_SLP_EN)) {
        /* \_S5 is the only sleep state the DSDT declares: SLP_EN is power off. */
        p->exit_code = 0;
        partition_stop(p, PART_EXITED, "ACPI power off (sleep control register, S5)");
        *stop = true;
        return true;
    }
    if (!e->in && port == PT_ACPI_RESET_PORT && byte == PT_ACPI_RESET_VALUE) {
        /* A reset, like a triple fault, ends this run of the machine: the
         * manager starts it again when its restart policy says so (on-fault,
         * always), while a power off stays exited. */
        partition_stop(p, PART_FAULTED, "the guest reset itself (ACPI reset register)");
        *stop = true;
        return true;
    }
    uint32_t answer = all_ones(e->size);
    if (port >= PIT_FIRST && port <= PIT_LAST) {
        if (e->in)
            answer = vpit_read(s, port);
        else
            vpit_write(s, port, byte);
    } else if (port == PORT_61) {
        if (e->in)
            answer = vpit_read(s, port);
        else
            vpit_write(s, port, byte);
    } else if (port == CMOS_INDEX || port == CMOS_DATA) {
        if (e->in)
            answer = vrtc_read(s, port);
        else
            vrtc_write(s, port, byte);
    } else if (vpic_port(port)) {
        if (e->in)
            answer = vpic_read(port);
    } else if (port == PT_ACPI_SLEEP_STATUS_PORT) {
        if (e->in)
            answer = 0;   /* WAK_STS clear: never woken, as it never sleeps */
    } else {
        /* Not a device of the platform: absent, unless a policy claims it (hv/vdeny.c). */
        return false;
    }
    if (e->in)
        *value = answer & all_ones(e->size);
    return true;
}
