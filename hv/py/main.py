# Taipan's first Python: the CPUs' plans, partitions up, then the shell.
import micropython

# Ctrl-C is a key like any other for the shell's own code (it cancels the line
# being typed); only a running command can be interrupted (hv.interruptible).
micropython.kbd_intr(-1)

import manager  # noqa: E402 - after the line above, so nothing before it can be interrupted
import scheduler  # noqa: E402
import shell  # noqa: E402
import usermods  # noqa: E402

shell.banner()
scheduler.start()
manager.init(usermods.init)
shell.partitions_summary()
shell.run()
