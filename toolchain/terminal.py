"""Joins this terminal to a serial line held as a file descriptor, until the escape key."""
from __future__ import annotations

import os
import select
import sys
import termios
import tty

ESCAPE = 0x1D  # Ctrl-], as telnet and most serial tools use


def attach(line_fd: int, *, escape: int = ESCAPE, alive=lambda: True) -> None:
    """Copy keystrokes to `line_fd` and its bytes to the terminal; return on `escape` or when not alive()."""
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    if saved is not None:
        tty.setraw(stdin)  # every key, Ctrl-C included, belongs to the remote console
    try:
        while alive():
            ready, _, _ = select.select([stdin, line_fd], [], [], 0.2)
            if line_fd in ready:
                data = os.read(line_fd, 4096)
                if not data:
                    return
                os.write(stdout, data)
            if stdin in ready:
                keys = os.read(stdin, 1024)
                if not keys or escape in keys:
                    keys = keys.split(bytes([escape]))[0]
                    if keys:
                        os.write(line_fd, keys)
                    return
                os.write(line_fd, keys)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
