"""The console under abuse: a megabyte of random bytes, 100 KB lines and control sequences leave
it answering, the partitions running and the MicroPython heap where it was (issue 10)."""
from __future__ import annotations

import os
import random
import re
import threading

import pexpect
import pytest

pytestmark = pytest.mark.boot

SEED = 20261203
# QEMU's own escape key (-echr 0x14, toolchain/emulator.py) is the emulator's, not Taipan's.
QEMU_ESCAPE = 0x14
# What readline's history (16 lines of at most 4096 bytes) and the shell's own tables may keep.
HEAP_SLACK = 160 * 1024
# Control sequences a terminal, a script or line noise sends: Ctrl-C, Ctrl-D on an empty line,
# Ctrl-E (paste mode in MicroPython's REPL), Ctrl-Z, cursor keys, a lone and a broken escape,
# TABs, a NUL, DEL, and Ctrl-A on an empty line (the raw REPL) with junk, left with Ctrl-B.
CONTROL = (b"\x03\x04\x05\x1a\x1b[A\x1b[B\x1b[C\x1b[D\x1b\x1b[99;99H\x1b[\x00\x7f\t\t\t\r"
           b"\x01print('raw junk' +)\x04\x02\r\x01\x03\x02\r")


def send_draining(console, data: bytes, tag: str) -> str:
    """Write data to the serial line while reading what comes back, so neither side blocks; then
    leave whatever it left the console in (the raw REPL: Ctrl-B; a half-typed line: Ctrl-C) and
    wait for the answer to `tag`, an unknown command typed last. Return all that came back."""
    child = console.child
    written = threading.Event()

    def writer() -> None:
        for at in range(0, len(data), 512):
            os.write(child.child_fd, data[at:at + 512])
        os.write(child.child_fd, b"\x02\x03\r" + tag.encode() + b"\r")
        written.set()

    threading.Thread(target=writer, daemon=True).start()
    seen = []
    while not written.is_set():
        try:
            seen.append(child.read_nonblocking(1 << 16, timeout=1))
        except pexpect.TIMEOUT:
            pass
    # The UART takes the bytes still queued in the pty at the console's pace.
    child.expect_exact(f"error: unknown command '{tag}'", timeout=300)
    seen.append(child.before + child.after)
    console.wait_prompt()
    return "".join(seen)


def heap_used(console) -> int:
    """Bytes of the MicroPython heap in use after a collection, as `mem` shows them."""
    out = console.command("mem")
    number, unit = re.search(r"heap: .* total, ([\d.]+) (B|KiB|MiB) used", out).groups()
    return int(float(number) * {"B": 1, "KiB": 1024, "MiB": 1 << 20}[unit])


def assert_alive(console) -> None:
    out = console.command("ps")
    assert re.search(r"^hello1 +running", out, re.M) and re.search(r"^hello2 +running", out, re.M), out
    assert "faulted" not in console.command("events")


def test_a_line_of_100_kb_is_refused_whole_and_the_console_goes_on(qemu_boot):
    console = qemu_boot(no_reboot=True)
    before = heap_used(console)
    for number, line in enumerate((b"x" * 100_000, b"stop " + b"hello1" * 20_000)):
        out = send_draining(console, line + b"\r", f"long{number}")
        assert "error: a line holds at most 4096 bytes; this one was longer and nothing of it ran" in out
        assert len(out) < 4096 + 400  # what was dropped was not echoed either
    assert_alive(console)  # the stop of the second line did not run
    assert heap_used(console) <= before + HEAP_SLACK
    assert "list the commands" in console.command("help")


def test_a_megabyte_of_random_bytes_and_control_sequences_leave_it_answering_with_a_flat_heap(qemu_boot):
    console = qemu_boot(no_reboot=True)
    before = heap_used(console)
    rng = random.Random(SEED)
    noise = bytes(b for b in rng.randbytes(1 << 20) if b != QEMU_ESCAPE)
    for part in range(4):  # control sequences between quarters of the noise
        send_draining(console, noise[part << 18:(part + 1) << 18] + CONTROL, f"noise{part}")
        assert_alive(console)
    assert heap_used(console) <= before + HEAP_SLACK
