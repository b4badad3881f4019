"""A minimal QMP client for tests: QEMU's screen and physical memory, read from outside the guest."""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any


class Qmp:
    """One QMP connection on a unix socket QEMU serves (`-qmp unix:PATH,server=on,wait=off`)."""

    def __init__(self, path: Path, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.file = self.sock.makefile("rw")
        json.loads(self.file.readline())   # the greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments: Any) -> Any:
        self.file.write(json.dumps({"execute": command, "arguments": arguments}) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def read_ppm(path: Path) -> tuple[int, int, bytes]:
    """(width, height, RGB bytes) of the binary PPM QEMU's screendump writes."""
    data = path.read_bytes()
    magic, size, maxval, pixels = data.split(b"\n", 3)
    if magic != b"P6" or maxval != b"255":
        raise ValueError(f"{path}: not an 8-bit binary PPM")
    width, height = map(int, size.split())
    return width, height, pixels[:width * height * 3]
