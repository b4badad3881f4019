/* MMIO exits: the faulting MOV decoded from the guest's own code; the APIC and IOAPIC registers read or written here, a device model's access handed up. */
#include "libc.h"
#include "partition.h"
#include "vcpu_state.h"
#include "vlapic.h"

#define EFER_LMA (1ull << 10)

/* One decoded MOV between a register (or an immediate) and memory. */
struct mmio_insn {
    bool write;
    unsigned reg;         /* x86 register number of the source or destination */
    bool has_imm;
    uint32_t imm;
    uint8_t size;         /* 1, 2, 4 or 8 */
    uint32_t len;
};

/* The bytes a ModRM memory operand takes after the ModRM byte: SIB and displacement (SDM vol. 2A, 2.1.5). */
static int modrm_tail(const uint8_t *b, uint32_t got, uint32_t at, bool addr16)
{
    uint8_t modrm = b[at];
    unsigned mod = modrm >> 6, rm = modrm & 7;
    if (mod == 3 || addr16)
        return -1;   /* a register operand cannot fault on memory; 16-bit addressing is not decoded */
    int n = 0;
    if (rm == 4) {
        if (at + 1 >= got)
            return -1;
        n = 1;
        if (mod == 0 && (b[at + 1] & 7) == 5)
            return n + 4;   /* SIB with no base: disp32 */
    }
    if (mod == 0 && rm == 5)
        return n + 4;       /* RIP-relative (64-bit) or disp32 */
    if (mod == 1)
        return n + 1;
    if (mod == 2)
        return n + 4;
    return n;
}

/*
 * The forms compilers emit for device registers: MOV r/m, r (88, 89),
 * MOV r, r/m (8A, 8B) and MOV r/m, imm (C6, C7), with operand-size and
 * segment prefixes and REX. Anything else is not decoded.
 */
static bool mmio_decode(const uint8_t *b, uint32_t got, bool long64, struct mmio_insn *d)
{
    uint32_t i = 0;
    bool opsize = false, addrsize = false;
    uint8_t rex = 0;
    for (; i < got; i++) {
        uint8_t p = b[i];
        if (p == 0x66)
            opsize = true;
        else if (p == 0x67)
            addrsize = true;
        else if (p != 0x2e && p != 0x36 && p != 0x3e && p != 0x26 && p != 0x64 && p != 0x65)
            break;
    }
    if (long64 && i < got && (b[i] & 0xf0) == 0x40)
        rex = b[i++];
    if (i + 2 > got)
        return false;
    uint8_t op = b[i];
    if (op >= 0xa0 && op <= 0xa3) {
        /* MOV AL/eAX to or from moffs: the address follows the opcode (8 bytes in 64-bit mode). */
        uint32_t moffs = long64 ? (addrsize ? 4 : 8) : (addrsize ? 2 : 4);
        d->size = (op & 1) ? ((rex & 8) ? 8 : opsize ? 2 : 4) : 1;
        d->reg = 0;
        d->has_imm = false;
        d->write = op >= 0xa2;
        d->len = i + 1 + moffs;
        return d->len <= got;
    }
    uint8_t modrm = b[i + 1];
    bool byte_op = op == 0x88 || op == 0x8a || op == 0xc6;
    d->size = byte_op ? 1 : (rex & 8) ? 8 : opsize ? 2 : 4;
    d->reg = ((modrm >> 3) & 7) | ((rex & 4) ? 8u : 0u);
    d->has_imm = false;
    switch (op) {
    case 0x88: case 0x89: d->write = true; break;
    case 0x8a: case 0x8b: d->write = false; break;
    case 0xc6: case 0xc7:
        if ((modrm >> 3) & 7)
            return false;
        d->write = true;
        d->has_imm = true;
        break;
    default:
        return false;
    }
    /* 16-bit addressing exists only outside 64-bit mode with 0x67. */
    int tail = modrm_tail(b, got, i + 1, addrsize && !long64);
    if (tail < 0)
        return false;
    uint32_t end = i + 2 + (uint32_t)tail;
    if (d->has_imm) {
        uint32_t n = d->size == 1 ? 1 : d->size == 2 ? 2 : 4;   /* imm32 sign-extended for 64-bit */
        if (end + n > got)
            return false;
        d->imm = 0;
        memcpy(&d->imm, b + end, n);
        end += n;
    }
    if (end > got)
        return false;
    d->len = end;
    return true;
}

/* The MOV at RIP and the register it names (NULL for an immediate); false: not decoded. */
static bool vmmio_fetch(struct vcpu *v, const struct exit_info *e, struct mmio_insn *d, uint64_t **reg)
{
    const struct vcpu_ops *ops = partition_backend();
    uint8_t b[15];
    bool long64 = ops->reg_get(v, VREG_EFER) & EFER_LMA;
    /* Code segments of the guests that map devices are flat: RIP is the linear address. */
    uint32_t got = vmem_fetch(v, e->rip, b, sizeof(b));
    if (!mmio_decode(b, got, long64, d))
        return false;
    /* Byte registers 4-7 are AH..BH or SPL..DIL depending on REX: not decoded. */
    if (d->size == 1 && d->reg >= 4 && d->reg < 8)
        return false;
    *reg = d->has_imm ? NULL : vcpu_gpr(v, d->reg);
    return d->has_imm || *reg;
}

/* What a decoded write stores: the register's low bytes, or the immediate (imm32 sign-extended for 64 bits). */
static uint64_t written_value(const struct mmio_insn *d, const uint64_t *reg)
{
    if (d->has_imm)
        return d->size == 8 ? (uint64_t)(int64_t)(int32_t)d->imm : d->imm;
    return d->size == 8 ? *reg : *reg & ((1ull << (d->size * 8)) - 1);
}

/* A load into reg: 32- and 64-bit ones fill the register (zero-extended), 8- and 16-bit ones merge. */
static void load_register(uint64_t *reg, uint8_t size, uint64_t value)
{
    uint64_t mask = size == 8 ? ~0ull : (1ull << (size * 8)) - 1;
    *reg = size >= 4 ? value & mask : (*reg & ~mask) | (value & mask);
}

bool vmmio_emulate(struct vcpu *v, const struct exit_info *e)
{
    struct mmio_insn d;
    uint64_t *reg;
    if (!vmmio_fetch(v, e, &d, &reg))
        return false;
    uint32_t value = d.write ? (uint32_t)written_value(&d, reg) : 0;
    uint32_t offset = (uint32_t)(e->gpa & 0xfff);
    /* The APIC and IOAPIC registers are 32 bits wide: a narrower or wider
     * access reaches the dword it starts in. */
    if (vlapic_mmio_owns(v, e->gpa))
        vlapic_mmio(v, offset & ~3u, d.write, &value);
    else if ((e->gpa & ~0xfffull) == VIOAPIC_BASE)
        vioapic_mmio(v->part, offset & ~3u, d.write, &value);
    else
        return false;
    if (!d.write)
        load_register(reg, d.size, value);
    partition_backend()->advance_rip(v, d.len);
    return true;
}

bool vmmio_decode_exit(struct vcpu *v, struct exit_info *e)
{
    struct mmio_insn d;
    uint64_t *reg;
    if (e->exec || !vmmio_fetch(v, e, &d, &reg))
        return false;
    e->kind = EXIT_MMIO;
    e->write = d.write;
    e->read = !d.write;
    e->size = d.size;
    e->insn_len = d.len;
    e->mmio_reg = (uint8_t)d.reg;
    e->mmio_value = d.write ? written_value(&d, reg) : 0;
    return true;
}

void vmmio_complete(struct vcpu *v, const struct exit_info *e, uint64_t value)
{
    uint64_t *reg = vcpu_gpr(v, e->mmio_reg);
    if (!e->write && reg)
        load_register(reg, e->size, value);
}
