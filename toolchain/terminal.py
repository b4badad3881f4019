"""Joins this terminal to a serial line held as a file descriptor, until the escape key."""
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


def attach(line_fd: int, *, escape: int = ESCAPE, alive: Callable[[], bool] = lambda: True) -> str:
    """Copy keystrokes to `line_fd` and its bytes to the terminal until `escape`, the line's end or not alive().

    Returns why it stopped: "escape", "closed" (the line ended) or "stopped"
    (alive() turned false). The terminal's mode is restored whatever happens.
    """
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
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
                    if not keys or escape in keys:
                        keys = keys.split(bytes([escape]))[0]
                        if keys:
                            os.write(line_fd, keys)
                        return "escape"
                    os.write(line_fd, keys)
            return "stopped"
        finally:
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
