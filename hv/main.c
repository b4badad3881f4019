/* hv_main: bring up the console, memory, exceptions, the CPUs and their schedulers, then hand over to MicroPython. */
#include "acpi.h"
#include "cpu.h"
#include "cpus.h"
#include "framebuffer.h"
#include "identity_map.h"
#include "idt.h"
#include "main.h"
#include "mgmt.h"
#include "multiboot.h"
#include "page_alloc.h"
#include "partition.h"
#include "port.h"
#include "printk.h"
#include "rtc.h"
#include "tsc.h"
#include "uart16550.h"

_Noreturn void hv_main(uint32_t magic, uint64_t info)
{
    /* The console first: every later failure must be able to say why. */
    uart_init();
    printk("taipan: early boot (%s)\n", boot_protocol_name(magic));

    /* Copy the loader's data before the allocator may reuse the memory holding it. */
    if (!boot_info_parse(magic, info))
        cpu_halt();
    const struct boot_info *bi = boot_info_get();
    page_alloc_init(bi);

    idt_init();

    cpu_identify();
    tsc_calibrate();
    rtc_init();  /* once, after the TSC: the time of day is this reading advanced by the TSC */
    const struct cpu_info *cpu = cpu_info_get();
    acpi_init();

    struct page_stats ps;
    page_alloc_stats(&ps);
    printk("taipan: %lu MiB usable RAM (%lu MiB above 4 GiB), %lu MiB free\n",
           (unsigned long)(ps.total_pages >> 8), (unsigned long)(ps.high_pages >> 8),
           (unsigned long)(ps.free_pages >> 8));
    printk("taipan: cpu %s \"%s\" family %u model %u stepping %u\n",
           cpu->vendor, cpu->brand, cpu->family, cpu->model, cpu->stepping);
    printk("taipan: virtualization %s: %s\n", cpu->virt, cpu->virt_note);
    if (cpu->hypervisor_present)
        printk("taipan: running under %s (CPUID 0x40000000 \"%s\"): %s\n", cpu->hv_vendor_name,
               cpu->hv_signature, cpu->nested_note);

    /* The boot CPU's own tables, LAPIC and backend, before anything can fault or run a guest. */
    cpus_init_boot();

    /* Before MicroPython takes its heap: partitions' memory is decided at build time. */
    partitions_init();
    /* After the partitions' low memory is reserved, so its page directories land elsewhere. */
    identity_map_high();
    framebuffer_banner();
    cpus_start_others();

    /* From here this stack is the management context's; CPU 0's scheduler
     * decides when it runs. */
    mgmt_start();
    mp_port_main();
    printk("taipan: MicroPython returned; halting\n");
    cpu_halt();
}
