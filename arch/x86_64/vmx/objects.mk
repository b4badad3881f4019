# The VMX backend (Intel VT-x + EPT): VMX operation, the VMCS, the exit path.
ARCH_SRC += arch/x86_64/vmx/vmx.c
ARCH_SRC += arch/x86_64/vmx/vmcs.c
ARCH_SRC += arch/x86_64/vmx/vmx_exit.c
