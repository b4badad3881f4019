/* The boot banner on the multiboot2 framebuffer (linear RGB or EGA text): a few lines, then left alone. */
#include <stdint.h>
#include "cpu.h"
#include "fb_font.h"
#include "framebuffer.h"
#include "layout.h"
#include "libc.h"
#include "multiboot.h"
#include "printk.h"
#include "uart16550.h"

#define FB_TYPE_RGB 1
#define FB_TYPE_EGA_TEXT 2
#define BANNER_LINES 6
#define BANNER_COLS 100
#define MARGIN_CELLS 1

static bool drawn;

static uint32_t rgb_pixel(const struct boot_framebuffer *fb, uint8_t r, uint8_t g, uint8_t b)
{
    /* Each channel is scaled from 8 bits to the mode's width and moved to its position. */
    return (uint32_t)(r >> (8 - fb->red_bits)) << fb->red_pos |
           (uint32_t)(g >> (8 - fb->green_bits)) << fb->green_pos |
           (uint32_t)(b >> (8 - fb->blue_bits)) << fb->blue_pos;
}

static void put_pixel(const struct boot_framebuffer *fb, uint32_t x, uint32_t y, uint32_t value)
{
    uint8_t *p = (uint8_t *)(uintptr_t)(fb->addr + (uint64_t)y * fb->pitch + (uint64_t)x * (fb->bpp / 8));
    for (uint32_t i = 0; i < fb->bpp / 8u; i++)
        p[i] = (uint8_t)(value >> (8 * i));
}

static void rgb_text(const struct boot_framebuffer *fb, uint32_t col, uint32_t row, const char *s, uint32_t fg)
{
    for (; *s; s++, col++) {
        uint32_t x0 = col * FB_FONT_W, y0 = row * FB_FONT_H;
        if (x0 + FB_FONT_W > fb->width || y0 + FB_FONT_H > fb->height)
            return;
        unsigned char c = (unsigned char)*s;
        if (c < FB_FONT_FIRST || c > FB_FONT_LAST)
            c = '?';
        const uint8_t *glyph = FB_FONT[c - FB_FONT_FIRST];
        for (uint32_t y = 0; y < FB_FONT_H; y++)
            for (uint32_t x = 0; x < FB_FONT_W; x++)
                if (glyph[y] & (0x80 >> x))
                    put_pixel(fb, x0 + x, y0 + y, fg);
    }
}

static void ega_text(const struct boot_framebuffer *fb, uint32_t col, uint32_t row, const char *s, uint8_t attr)
{
    /* EGA text: width and height count characters, each cell a byte and its colour attribute. */
    volatile uint16_t *cells = (volatile uint16_t *)(uintptr_t)fb->addr;
    for (; *s && col < fb->width && row < fb->height; s++, col++)
        cells[row * (fb->pitch / 2) + col] = (uint16_t)attr << 8 | (uint8_t)*s;
}

/* The lines: who, where the console is (or that there is none), and what the screen will not show. */
static void banner_lines(char lines[BANNER_LINES][BANNER_COLS], uint32_t *count)
{
    const struct cpu_info *cpu = cpu_info_get();
    uint32_t n = 0;
    snprintk(lines[n++], BANNER_COLS, "Taipan %s - static-partitioning hypervisor", TAIPAN_VERSION);
    if (uart_present()) {
        snprintk(lines[n++], BANNER_COLS, "console: serial port COM1 (I/O 0x3f8), 115200 baud 8N1");
        snprintk(lines[n++], BANNER_COLS, "connect a null-modem cable or serial console server to it");
    } else {
        snprintk(lines[n++], BANNER_COLS, "no console: no 16550 UART answers at I/O 0x3f8 (COM1)");
        snprintk(lines[n++], BANNER_COLS, "Taipan's console is COM1 only: fit a serial port there");
    }
    if (cpu->hv_vendor_name[0])
        snprintk(lines[n++], BANNER_COLS, "running under %s: %s", cpu->hv_vendor_name, cpu->virt);
    else
        snprintk(lines[n++], BANNER_COLS, "virtualization: %s", cpu->virt);
    snprintk(lines[n++], BANNER_COLS, "this screen shows nothing more after this banner");
    *count = n;
}

void framebuffer_banner(void)
{
    const struct boot_info *bi = boot_info_get();
    if (!bi->have_framebuffer)
        return;
    const struct boot_framebuffer *fb = &bi->fb;
    uint64_t bytes = (uint64_t)fb->pitch * fb->height;
    /* Only memory the identity map covers can be written through a pointer. */
    if (fb->addr == 0 || fb->addr + bytes > LAYOUT_IDENTITY_MAP_BYTES) {
        printk("taipan: framebuffer at 0x%llx is outside the identity map: no screen banner\n",
               (unsigned long long)fb->addr);
        return;
    }
    char lines[BANNER_LINES][BANNER_COLS];
    uint32_t count;
    banner_lines(lines, &count);
    if (fb->type == FB_TYPE_RGB && (fb->bpp == 32 || fb->bpp == 24 || fb->bpp == 16) &&
        fb->red_bits && fb->red_bits <= 8 && fb->green_bits <= 8 && fb->blue_bits <= 8) {
        memset((void *)(uintptr_t)fb->addr, 0, bytes);   /* GRUB's menu goes, the banner stays */
        uint32_t white = rgb_pixel(fb, 0xff, 0xff, 0xff), yellow = rgb_pixel(fb, 0xff, 0xd0, 0x40);
        for (uint32_t i = 0; i < count; i++)
            rgb_text(fb, MARGIN_CELLS, MARGIN_CELLS + i, lines[i], i == 1 ? yellow : white);
    } else if (fb->type == FB_TYPE_EGA_TEXT && fb->pitch >= 2 * fb->width) {
        volatile uint16_t *cells = (volatile uint16_t *)(uintptr_t)fb->addr;
        for (uint32_t i = 0; i < fb->height * (fb->pitch / 2); i++)
            cells[i] = 0x0720;   /* a blank in grey on black */
        for (uint32_t i = 0; i < count; i++)
            ega_text(fb, MARGIN_CELLS, MARGIN_CELLS + i, lines[i], i == 1 ? 0x0e : 0x0f);
    } else {
        printk("taipan: framebuffer type %u, %u bpp: no screen banner in this mode\n", fb->type, fb->bpp);
        return;
    }
    drawn = true;
    printk("taipan: banner on the %s framebuffer at 0x%llx (%ux%u)\n",
           fb->type == FB_TYPE_RGB ? "RGB" : "EGA text", (unsigned long long)fb->addr, fb->width, fb->height);
}

bool framebuffer_drawn(void)
{
    return drawn;
}
