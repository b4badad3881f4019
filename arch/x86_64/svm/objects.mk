# The SVM (AMD-V + NPT) backend sources.
