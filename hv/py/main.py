# Taipan's first Python: print the banner, then hand the serial line to the shell.
import hv
import shell

shell.banner()
shell.run()
