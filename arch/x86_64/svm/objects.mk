# The SVM (AMD-V + NPT) backend sources.
ARCH_SRC += arch/x86_64/svm/svm.c
ARCH_SRC += arch/x86_64/svm/vmcb.c
ARCH_SRC += arch/x86_64/svm/svm_exit.c
