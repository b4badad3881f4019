"""arch/x86_64/svm: Python generators for this folder's assembly."""
