# The x86_64 sources shared by the VMX and SVM backends.
ARCH_SRC += arch/x86_64/common/apic.c
ARCH_SRC += arch/x86_64/common/cpu.c
ARCH_SRC += arch/x86_64/common/exception.c
ARCH_SRC += arch/x86_64/common/idt.c
ARCH_SRC += arch/x86_64/common/irq.c
ARCH_SRC += arch/x86_64/common/reboot.c
ARCH_SRC += arch/x86_64/common/rtc.c
ARCH_SRC += arch/x86_64/common/smp.c
ARCH_SRC += arch/x86_64/common/tsc.c
ARCH_SRC += arch/x86_64/common/identity_map.c
