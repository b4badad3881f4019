"""Joins this terminal to an open serial line until the escape key."""
from __future__ import annotations

import os
import select
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from toolchain.serial_line import Line, LineError

ESCAPE = 0x1D  # Ctrl-], as telnet and most serial tools use
# A hang-up or a kill would otherwise end the process with the terminal still
# raw; turned into SystemExit, they leave through attach()'s finally.
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def _signals_exit() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers
        return

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    saved = {sig: signal.signal(sig, leave) for sig in EXIT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def attach(line: Line, *, escape: int = ESCAPE, alive: Callable[[], bool] = lambda: True) -> str:
    """Copy keystrokes to `line` and its bytes to the terminal until `escape`, the line's end or not alive().

    Returns why it stopped: "escape", "closed" (the line ended) or "stopped"
    (alive() turned false). The terminal's mode is restored whatever happens.
    """
    stdin, stdout, line_fd = sys.stdin.fileno(), sys.stdout.fileno(), line.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    with _signals_exit():
        if saved is not None:
            tty.setraw(stdin)  # every key, Ctrl-C included, belongs to the remote console
        try:
            while alive():
                ready, _, _ = select.select([stdin, line_fd], [], [], 0.2)
                if line_fd in ready:
                    try:
                        data = os.read(line_fd, 4096)
                    except OSError:  # EIO: a pty whose other side has gone
                        data = b""
                    if not data:
                        return "closed"
                    os.write(stdout, data)
                if stdin in ready:
                    keys = os.read(stdin, 1024)
                    leaving = not keys or escape in keys
                    keys = keys.split(bytes([escape]))[0]
                    try:
                        if keys:
                            line.write(keys)
                    except LineError:
                        return "closed"
                    if leaving:
                        return "escape"
            return "stopped"
        finally:
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
