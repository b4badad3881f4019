/* The virtual 16550: registers a guest's serial driver reads back, its receive and THR-empty interrupts, output to its console ring. */
#include "journal.h"
#include "partition.h"
#include "vuart.h"

/* Register offsets from the base port; DLAB (LCR bit 7) turns 0 and 1 into the divisor latch. */
#define REG_DATA 0
#define REG_IER 1
#define REG_IIR_FCR 2
#define REG_LCR 3
#define REG_MCR 4
#define REG_LSR 5
#define REG_MSR 6
#define REG_SCR 7

#define LCR_DLAB 0x80
#define LSR_DATA_READY 0x01
/* The transmitter is always empty: output is taken at once, as a fast real UART would. */
#define LSR_THR_EMPTY 0x20
#define LSR_TX_IDLE 0x40
/* IIR: FIFOs enabled, and the pending interrupt of highest priority. */
#define IIR_FIFO 0xC0
#define IIR_NONE 0x01
#define IIR_RX_DATA 0x04
#define IIR_THR_EMPTY 0x02
#define IER_RX_DATA 0x01
#define IER_THR_EMPTY 0x02
#define MCR_OUT2 0x08
/* Carrier, data set ready and clear to send: a cable with someone at the other end. */
#define MSR_CONNECTED 0xB0

static bool rx_ready(const struct partition *p)
{
    return p->uart.rx_head != p->uart.rx_tail;
}

static bool rx_interrupt(const struct partition *p)
{
    return (p->uart.ier & IER_RX_DATA) && rx_ready(p);
}

static bool thre_interrupt(const struct partition *p)
{
    return (p->uart.ier & IER_THR_EMPTY) && p->uart.thre_pending;
}

bool vuart_irq_line(const struct partition *p)
{
    return (p->uart.mcr & MCR_OUT2) && (rx_interrupt(p) || thre_interrupt(p));
}

bool vuart_feed(struct partition *p, uint8_t c)
{
    uint8_t next = (uint8_t)((p->uart.rx_head + 1) % sizeof(p->uart.rx));
    if (next == p->uart.rx_tail) {
        return false;
    }
    p->uart.rx[p->uart.rx_head] = c;
    /* CPU 0 fills the queue, the partition's CPU drains it: the byte first. */
    __atomic_store_n(&p->uart.rx_head, next, __ATOMIC_RELEASE);
    return true;
}

void vuart_output(struct partition *p, uint8_t c)
{
    console_ring_put(&p->console, c);
    if (c == '\n' || p->line_len == sizeof(p->line)) {
        uint32_t len = p->line_len;
        if (len && p->line[len - 1] == '\r') {
            len--;
        }
        journal_line(p->desc->name, p->line, len);
        p->line_len = 0;
        if (c == '\n') {
            return;
        }
    }
    if (c != '\n') {
        p->line[p->line_len++] = (char)c;
    }
}

static uint8_t vuart_read(struct partition *p, unsigned reg)
{
    bool dlab = p->uart.lcr & LCR_DLAB;
    switch (reg) {
    case REG_DATA:
        if (dlab) {
            return p->uart.dll;
        }
        if (rx_ready(p)) {
            uint8_t c = p->uart.rx[p->uart.rx_tail];
            p->uart.rx_tail = (uint8_t)((p->uart.rx_tail + 1) % sizeof(p->uart.rx));
            return c;
        }
        return 0;
    case REG_IER:
        return dlab ? p->uart.dlm : p->uart.ier;
    case REG_IIR_FCR:
        /* Received data before THR empty (16550 data sheet, table 4); reading
         * IIR that reports THR empty clears it. */
        if (rx_interrupt(p))
            return IIR_FIFO | IIR_RX_DATA;
        if (thre_interrupt(p)) {
            p->uart.thre_pending = false;
            return IIR_FIFO | IIR_THR_EMPTY;
        }
        return IIR_FIFO | IIR_NONE;
    case REG_LCR:
        return p->uart.lcr;
    case REG_MCR:
        return p->uart.mcr;
    case REG_LSR:
        return LSR_THR_EMPTY | LSR_TX_IDLE | (rx_ready(p) ? LSR_DATA_READY : 0);
    case REG_MSR:
        return MSR_CONNECTED;
    default:
        return p->uart.scr;
    }
}

static void vuart_write(struct partition *p, unsigned reg, uint8_t v)
{
    bool dlab = p->uart.lcr & LCR_DLAB;
    switch (reg) {
    case REG_DATA:
        if (dlab) {
            p->uart.dll = v;
        } else {
            vuart_output(p, v);
            /* Sent at once: THR is empty again, and says so. */
            p->uart.thre_pending = true;
        }
        break;
    case REG_IER:
        if (dlab) {
            p->uart.dlm = v;
        } else {
            /* Enabling the THR-empty interrupt with THR empty raises it. */
            if ((v & IER_THR_EMPTY) && !(p->uart.ier & IER_THR_EMPTY))
                p->uart.thre_pending = true;
            p->uart.ier = v & 0x0f;
        }
        break;
    case REG_LCR:
        p->uart.lcr = v;
        break;
    case REG_MCR:
        p->uart.mcr = v & 0x1f;
        break;
    case REG_SCR:
        p->uart.scr = v;
        break;
    default:
        break;  /* FCR and the read-only LSR/MSR: nothing to keep */
    }
}

bool vuart_access(struct partition *p, uint16_t port, bool in, uint32_t *value)
{
    if (port < VUART_BASE || port >= VUART_BASE + VUART_PORTS) {
        return false;
    }
    unsigned reg = port - VUART_BASE;
    if (in) {
        *value = (*value & ~0xffu) | vuart_read(p, reg);
    } else {
        vuart_write(p, reg, (uint8_t)*value);
    }
    return true;
}
