// Taipan port qstrs beyond those MicroPython finds by scanning the sources (none yet).
