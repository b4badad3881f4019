"""arch/x86_64/vmx: Python generators for this folder's assembly."""
