"""`taipan ctl TARGET COMMAND...`: one shell command run over a Taipan serial line, its output and status."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass

from toolchain import terminal
from toolchain.host_console import parse_escape
from toolchain.serial_line import DEFAULT_BAUD, TARGET_FORMS, Line, LineError, open_line

PROMPT = "taipan> "
# The shell announces what the hypervisor decided (a fault, a restart) on a line
# of its own that opens with a line break, whenever it waits for input.
ANNOUNCEMENT = re.compile(r"\ntaipan: [^\n]*\n")
ANNOUNCEMENT_START = "\ntaipan: "
TRACEBACK = "Traceback (most recent call last):"
# Commands that hand the line to a person until a key: they never come back by themselves.
INTERACTIVE = {"console": "taipan console TARGET, then 'console NAME'", "tail": "'log NAME' or taipan console",
               "py": "taipan console TARGET, then 'py'"}
PROMPT_RETRY_S = 5.0  # then the line may be held by a partition's console: escape once

EXIT_FAILED, EXIT_USAGE, EXIT_LINE = 1, 2, 3


class CtlError(Exception):
    """The exchange failed before the command's output was complete (no prompt, timeout)."""


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


def _normal(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\r", "")


def _tail(raw: bytes) -> str:
    return repr(_normal(raw)[-120:])


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
            raise CtlError(f"{line.target}: no {PROMPT.strip()!r} prompt in time (last output: {_tail(raw)}); "
                           "is the machine up, and no other client connected (QEMU serves one at a time)?")
        raw += line.read(min(deadline - now, 0.2))


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


def run_command(line: Line, command: str, timeout: float, escape: int = terminal.ESCAPE) -> Result:
    """Bring the shell to its prompt, type `command`, return what it printed.

    `escape` is the target's console escape, sent once if no prompt comes: it
    takes the line back from a partition's console or a `tail`.
    """
    deadline = time.monotonic() + timeout
    while line.read(0.05):  # bytes from before us (a partition's escape, old output) mean nothing
        pass
    # Enter shows a fresh prompt whatever was on screen, and waits for a booting machine.
    line.write(b"\r")
    _read_until(line, prompt_shown, deadline, retry=(time.monotonic() + PROMPT_RETRY_S, bytes([escape]) + b"\r"))
    line.write(command.encode("ascii") + b"\r")
    found: list[str] = []

    def complete(text: str) -> bool:
        output = output_after_echo(text, command)
        if output is not None:
            found.append(output)
        return output is not None

    _read_until(line, complete, deadline)
    return split_error(found[0])


def check_command(words: list[str]) -> str:
    """The command line to type, or ValueError if the shell could not take it as a script would mean it."""
    command = " ".join(words).strip()
    if not command:
        raise ValueError("no command given (try: taipan ctl TARGET help)")
    if any(not 32 <= ord(c) < 127 for c in command):
        raise ValueError("the command must be printable ASCII: the shell's line editor takes nothing else")
    if command.split()[0] in INTERACTIVE:
        raise ValueError(f"'{command.split()[0]}' waits for a person's keys; use {INTERACTIVE[command.split()[0]]}")
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


def cmd_ctl(args: argparse.Namespace) -> int:
    try:
        command = check_command(args.words)
    except ValueError as e:
        print(f"taipan ctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json and "--json" not in command.split():
        command += " --json"
    try:
        with open_line(args.target, baud=args.baud) as line:
            result = run_command(line, command, args.timeout, args.escape)
    except (LineError, CtlError) as e:
        print(f"taipan ctl: {e}", file=sys.stderr)
        return EXIT_LINE
    if result.error is not None:
        sys.stdout.write(result.output)
        print(result.error, file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        try:
            doc = json_document(result.output)
        except ValueError as e:
            print(f"taipan ctl: '{command}' printed no JSON document: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(json.dumps(doc, indent=2))
        return 0
    sys.stdout.write(result.output)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ctl", help="run one shell command on a Taipan over its serial line, print its output",
                       description="Run one shell command on the Taipan at TARGET and print its output. "
                       "Exit status: 0 success, 1 the command failed (its error: line on stderr), "
                       "2 usage, 3 the line failed (cannot connect, no prompt, timeout). "
                       f"TARGET is {TARGET_FORMS}.")
    p.add_argument("--json", action="store_true",
                   help="run the command with --json and print the parsed document (indented)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole exchange (default 30)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help=f"serial device speed (default {DEFAULT_BAUD})")
    p.add_argument("--escape", type=parse_escape, default=terminal.ESCAPE, metavar="KEY",
                   help="the target's console escape ([platform] console_escape; default Ctrl-]), sent "
                   "once if no prompt comes, to take the line back from a partition")
    p.add_argument("target", help="/dev/ttyUSB0, unix:PATH or tcp:HOST:PORT")
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="COMMAND", help="the shell command and its arguments")
    p.set_defaults(func=cmd_ctl)
