/* Machine reset, trying the mechanisms PCs have offered from most to least polite. */
#include <stdint.h>
#include "cpu.h"
#include "io.h"
#include "reboot.h"

_Noreturn void machine_reboot(void)
{
    __asm__ volatile("cli");

    /* Reset control register: bit 1 selects a hard reset, bit 2 triggers it on the 0→1 edge. */
    outb(0xcf9, 0x02);
    outb(0xcf9, 0x06);

    /* 8042 command 0xFE pulses the CPU reset line once its input buffer is empty. */
    for (uint32_t i = 0; i < 100000 && (inb(0x64) & 0x02); i++)
        ;
    outb(0x64, 0xfe);
    for (uint32_t i = 0; i < 1000000; i++)
        __asm__ volatile("pause");

    /* Last resort: with no IDT, int3 cannot be delivered and the CPU shuts down (reset). */
    static const struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } empty_idt = { 0, 0 };
    __asm__ volatile("lidt %0; int3" : : "m"(empty_idt));
    cpu_halt();
}
