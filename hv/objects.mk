# The vendor-neutral C core sources the toolchain compiles into the image.
HV_SRC += hv/boot_links.c
HV_SRC += hv/main.c
HV_SRC += hv/multiboot.c
HV_SRC += hv/framebuffer.c
HV_SRC += hv/page_alloc.c
HV_SRC += hv/printk.c
HV_SRC += hv/uart16550.c
HV_SRC += hv/console_ring.c
HV_SRC += hv/journal.c
HV_SRC += hv/partition.c
HV_SRC += hv/vcpu_run.c
HV_SRC += hv/vuart.c
