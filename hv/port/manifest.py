# Frozen into the image: Taipan's own MicroPython code (manager, scheduler, plan rules, shell, policy).
# The whole folder, so hv/py/plan.py (the plan rules toolchain/config.py also runs on the host) is in.
freeze("$(PORT_DIR)/../py")  # noqa: F821 - makemanifest.py provides freeze()
