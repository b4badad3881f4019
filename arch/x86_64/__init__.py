"""arch/x86_64: Python generators for this folder's assembly."""
