"""A Python client for Taipan's shell on a serial line: run a command, get its output or its JSON document.

    from toolchain.client import Console
    doc = Console("unix:/tmp/taipan.sock").run("ps --json")      # the parsed document
    with Console("rfc2217://consoles.lab:7001", timeout=10) as machine:
        machine.run("stop hello2")                                # CommandError on an "error:" line

`taipan ctl`, `taipan console` and `taipan fleet` are built on it.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Self

from toolchain.serial_line import DEFAULT_BAUD, Line, LineError, open_line
from toolchain.terminal import ESCAPE

__all__ = ["Console", "CommandError", "ConsoleTimeout", "LineError", "Result"]

PROMPT = "taipan> "
# The shell announces what the hypervisor decided (a fault, a restart) on a line
# of its own that opens with a line break, whenever it waits for input.
ANNOUNCEMENT = re.compile(r"\ntaipan: [^\n]*\n")
ANNOUNCEMENT_START = "\ntaipan: "
TRACEBACK = "Traceback (most recent call last):"
# Commands that hand the line to a person until a key: they never come back by themselves.
INTERACTIVE = {"console": "taipan console TARGET, then 'console NAME'", "tail": "'log NAME' or taipan console",
               "py": "taipan console TARGET, then 'py'"}
# A telnet server's first bytes: IAC WILL/WONT/DO/DONT. Taipan never sends 0xff.
TELNET_IAC, TELNET_OFFERS = b"\xff", (b"\xfb", b"\xfc", b"\xfd", b"\xfe")
PROMPT_RETRY_S = 5.0  # then the line may be held by a partition's console: escape once
CTRL_A, CTRL_B, CTRL_D = b"\x01", b"\x02", b"\x04"
DEFAULT_TIMEOUT = 30.0
# MicroPython's raw REPL (shared/runtime/pyexec.c): its banner, and raw-paste mode's
# request, its yes, and the byte that grants one more window of input.
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n>"
RAW_PASTE_ASK, RAW_PASTE_YES, RAW_PASTE_MORE = b"\x05A\x01", b"R\x01", b"\x01"


class ConsoleTimeout(LineError):
    """No prompt, or no end of the command's output, in time: the machine is down, busy or held by another client."""


class CommandError(Exception):
    """The shell answered the command with its "error: ..." line (or a --json command printed no document)."""

    def __init__(self, command: str, message: str, output: str = "") -> None:
        super().__init__(message)
        self.command = command
        self.message = message  # the console's error line(s), or why the output is no document
        self.output = output  # what the command printed before failing


@dataclass
class Result:
    output: str  # what the command printed, line ends "\n", without the error line
    error: str | None  # the console's "error: ..." line when the command failed


def _strip_announcements_ahead(text: str, pos: int) -> tuple[int, bool]:
    """Skip whole announcements at `pos`; (new pos, True) if one has started but not ended yet."""
    while True:
        match = ANNOUNCEMENT.match(text, pos)
        if match:
            pos = match.end()
            continue
        rest = text[pos:pos + len(ANNOUNCEMENT_START)]
        pending = bool(rest) and (ANNOUNCEMENT_START.startswith(rest) or rest == ANNOUNCEMENT_START)
        return pos, pending


def prompt_shown(text: str) -> bool:
    """Whether `text` ends with the prompt at a line start, followed by nothing but announcements."""
    at = ("\n" + text).rfind("\n" + PROMPT)  # the leading "\n": a prompt at the very start counts
    if at < 0:
        return False
    pos, pending = _strip_announcements_ahead(text, at + len(PROMPT))
    return pos == len(text) and not pending


def output_after_echo(text: str, command: str) -> str | None:
    """The command's output in `text` (all the line carried after it was typed), or None if not complete.

    The output starts after the shell's echo of `command` and its line end,
    skipping announcements that arrive while the shell still waits for the
    line, and ends before the first prompt at a line start. Announcements after
    that prompt belong to no command and are dropped.
    """
    echo, pos = "", 0
    while True:
        if echo.endswith(command) and text[pos:pos + 1] == "\n":
            pos += 1  # the line end right after the echo is the shell's Enter, never an announcement's
            break
        pos, pending = _strip_announcements_ahead(text, pos)
        if pending or pos >= len(text):
            return None
        echo += text[pos]
        pos += 1
    found = text.find("\n" + PROMPT, pos - 1)  # pos - 1 is the echo's line end
    return None if found < 0 else text[pos:found + 1]


def split_error(output: str) -> Result:
    """Split off the console's error: the "error:" line that ends the output, or that only the
    traceback `debug on` adds follows. An "error:" elsewhere is a guest's text (in `log`, say)."""
    lines = output.rstrip("\n").split("\n")
    at = len(lines) - 1
    if TRACEBACK in lines:
        at = len(lines) - 1 - lines[::-1].index(TRACEBACK) - 1
    if at < 0 or not lines[at].startswith("error:"):
        return Result(output, None)
    return Result("".join(line + "\n" for line in lines[:at]), "\n".join(lines[at:]))


def check_command(command: str) -> str:
    """`command` as the shell's line editor takes it, or ValueError if a script cannot run it."""
    command = command.strip()
    if not command:
        raise ValueError("no command given (try: help)")
    if any(not 32 <= ord(c) < 127 for c in command):
        raise ValueError("the command must be printable ASCII: the shell's line editor takes nothing else")
    first = command.split()[0]
    if first in INTERACTIVE:
        raise ValueError(f"'{first}' waits for a person's keys; use {INTERACTIVE[first]}")
    return command


def json_document(output: str) -> object:
    """The one JSON document a `--json` command prints on one line."""
    lines = [ln for ln in output.split("\n") if ln.strip()]
    if len(lines) != 1:
        raise ValueError(f"expected one line holding a JSON document, got {len(lines)} lines")
    try:
        return json.loads(lines[0])
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON document: {e}") from None


def answer(command: str, result: Result) -> str | object:
    """What `command` answered: its parsed document if it has `--json`, else its output text;
    CommandError for the console's error line or output that is no JSON document."""
    if result.error is not None:
        raise CommandError(command, result.error, result.output)
    if "--json" not in command.split():
        return result.output
    try:
        return json_document(result.output)
    except ValueError as e:
        raise CommandError(command, f"'{command}' printed no JSON document: {e}", result.output) from None


def _normal(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\r", "")


class Console:
    """The shell of the Taipan at `target` (a serial device, unix:PATH, tcp:HOST:PORT or rfc2217://HOST:PORT).

    Outside a `with` block (or open()), each run() connects, runs one command
    and disconnects, so the line is free between calls: QEMU's socket and most
    console servers serve one client at a time. Inside one, a single
    connection carries every command.

    `timeout` bounds each exchange, from connecting to the command's prompt.
    `escape` is the target's console escape ([platform] console_escape),
    sent once when no prompt comes: it takes the line back from a partition's
    console someone left attached.
    """

    def __init__(self, target: str, *, baud: int = DEFAULT_BAUD, timeout: float = DEFAULT_TIMEOUT,
                 escape: int = ESCAPE) -> None:
        self.target = target
        self.baud = baud
        self.timeout = timeout
        self.escape = escape
        self._line: Line | None = None

    @property
    def line(self) -> Line:
        """The open line (LineError if the console is not open)."""
        if self._line is None:
            raise LineError(f"{self.target}: not connected")
        return self._line

    def open(self) -> Self:
        """Connect (LineError, with the reason in one line, if the target cannot be opened)."""
        if self._line is None:
            self._line = open_line(self.target, baud=self.baud)
        return self

    def close(self) -> None:
        if self._line is not None:
            self._line.close()
            self._line = None

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def result(self, command: str, timeout: float | None = None) -> Result:
        """Run `command`; its output and the console's error line, if any, without raising for it."""
        command = check_command(command)
        if self._line is not None:
            return self._exchange(self._line, command, timeout)
        with self:
            return self._exchange(self.line, command, timeout)

    def run(self, command: str, timeout: float | None = None) -> str | object:
        """Run `command`: the parsed document if it has `--json`, else its output text.

        Raises CommandError for the console's `error:` line (or output that is
        no JSON document), ConsoleTimeout when no prompt comes in time, and
        LineError when the line cannot be opened or breaks.
        """
        return answer(command, self.result(command, timeout))

    def exec_raw(self, code: str, timeout: float | None = None) -> tuple[str, str]:
        """Run Python `code` in MicroPython's raw REPL on the metal: (what it printed, its traceback or "").

        From the shell's prompt Ctrl-A enters the raw REPL. The code goes in
        raw-paste mode, whose flow control sends no more than the interpreter
        has room for, so a UART FIFO that fills while guests run loses no byte.
        Ctrl-B then leaves for the shell, which main.py starts again without a
        soft reset: partitions and loaded modules stay as they are.
        """
        if self._line is not None:
            return self._exec_raw(self._line, code, timeout)
        with self:
            return self._exec_raw(self.line, code, timeout)

    def _exec_raw(self, line: Line, code: str, timeout: float | None) -> tuple[str, str]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._prompt(line, deadline)
        line.write(CTRL_A)
        raw = _RawReader(line, deadline)
        raw.until(RAW_BANNER)
        line.write(RAW_PASTE_ASK)
        if raw.take(2) != RAW_PASTE_YES:
            raise LineError(f"{line.target}: the raw REPL refused raw-paste mode")
        window = int.from_bytes(raw.take(2), "little")
        data, sent, room = code.encode("ascii"), 0, window
        while sent < len(data):
            while room == 0 or raw.pending(0):
                got = raw.take(1)
                if got != RAW_PASTE_MORE:
                    raise LineError(f"{line.target}: the raw REPL ended the paste early ({got!r})")
                room += window
            chunk = data[sent:sent + room]
            line.write(chunk)
            sent += len(chunk)
            room -= len(chunk)
        line.write(CTRL_D)
        raw.until(CTRL_D)  # the end of the paste, acknowledged; the code runs now
        output = _normal(raw.until(CTRL_D))
        error = _normal(raw.until(CTRL_D))
        raw.until(b">")
        line.write(CTRL_B)
        _read_until(line, prompt_shown, deadline)
        return output, error

    def _prompt(self, line: Line, deadline: float) -> None:
        """Bring the shell to its prompt, whatever the line was doing."""
        waiting = b""
        try:
            while more := line.read(0.05):  # bytes from before us (a partition's escape, old output) mean nothing
                waiting += more
        except LineError as e:
            # A console server that refuses a second client says why before it hangs up.
            said = _normal(waiting).strip()
            raise LineError(f"{e} (it said {said[-120:]!r})" if said else str(e)) from None
        if waiting[:1] == TELNET_IAC and waiting[1:2] in TELNET_OFFERS:
            raise LineError(f"{line.target}: the far end opens with telnet option negotiation: a telnet "
                            "or RFC 2217 port (use rfc2217://HOST:PORT for it)")
        # Enter shows a fresh prompt whatever was on screen, and waits for a booting machine.
        line.write(b"\r")
        # No prompt yet: the escape takes the line back from a partition's console (or ends a
        # `tail`), and Ctrl-B leaves the raw REPL, where stray bytes may have put the shell
        # (Ctrl-A on an empty line enters it: a telnet client's negotiation, say).
        _read_until(line, prompt_shown, deadline,
                    retry=(time.monotonic() + PROMPT_RETRY_S, bytes([self.escape]) + CTRL_B + b"\r"))

    def _exchange(self, line: Line, command: str, timeout: float | None) -> Result:
        """Bring the shell to its prompt, type `command`, return what it printed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._prompt(line, deadline)
        line.write(command.encode("ascii") + b"\r")
        found: list[str] = []

        def complete(text: str) -> bool:
            output = output_after_echo(text, command)
            if output is not None:
                found.append(output)
            return output is not None

        _read_until(line, complete, deadline)
        return split_error(found[0])


def _read_until(line: Line, done, deadline: float, retry: tuple[float, bytes] | None = None) -> bytes:
    raw = b""
    while True:
        now = time.monotonic()
        if done(_normal(raw)):
            return raw
        if retry is not None and now >= retry[0]:
            line.write(retry[1])
            retry = None
        if now >= deadline:
            raise ConsoleTimeout(f"{line.target}: no {PROMPT.strip()!r} prompt in time (last output: "
                                 f"{_normal(raw)[-120:]!r}); is the machine up, and no other client "
                                 "connected (QEMU serves one at a time)?")
        raw += line.read(min(deadline - now, 0.2))


class _RawReader:
    """The raw REPL's bytes as they come, taken by count or up to a marker, all before `deadline`."""

    def __init__(self, line: Line, deadline: float) -> None:
        self.line = line
        self.deadline = deadline
        self.buffer = b""

    def pending(self, wait: float) -> bool:
        self.buffer += self.line.read(wait)
        return bool(self.buffer)

    def _more(self) -> None:
        now = time.monotonic()
        if now >= self.deadline:
            raise ConsoleTimeout(f"{self.line.target}: the raw REPL did not answer in time (last output: "
                                 f"{_normal(self.buffer)[-120:]!r})")
        self.buffer += self.line.read(min(self.deadline - now, 0.2))

    def take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._more()
        got, self.buffer = self.buffer[:count], self.buffer[count:]
        return got

    def until(self, marker: bytes) -> bytes:
        """What comes before `marker`, which is consumed too."""
        while marker not in self.buffer:
            self._more()
        got, _, self.buffer = self.buffer.partition(marker)
        return got
