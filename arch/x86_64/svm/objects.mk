# The SVM (AMD-V + NPT) backend sources, and the local APIC timer that ends its slices.
ARCH_SRC += arch/x86_64/common/apic.c
ARCH_SRC += arch/x86_64/svm/svm.c
ARCH_SRC += arch/x86_64/svm/vmcb.c
ARCH_SRC += arch/x86_64/svm/svm_exit.c
