"""arch: Python generators for this folder's assembly."""
