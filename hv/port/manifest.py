# Frozen into the image: Taipan's own MicroPython code (manager, shell, policy).
freeze("$(PORT_DIR)/../py")  # noqa: F821 - makemanifest.py provides freeze()
