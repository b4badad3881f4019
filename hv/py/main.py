# Taipan's first Python: partitions up, the scheduler on the console's idle hook, then the shell.
import manager
import scheduler
import shell

shell.banner()
manager.init()
scheduler.start()
shell.partitions_summary()
shell.run()
