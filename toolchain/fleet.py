"""`taipan fleet FILE COMMAND...`: one shell command run on many Taipan machines at once, one row each."""
from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from toolchain.client import CommandError, Console, LineError, answer, check_command
from toolchain.ctl import EXIT_FAILED, EXIT_LINE, EXIT_USAGE, add_line_options
from toolchain.serial_line import TARGET_FORMS

MAX_JOBS = 32  # one thread per machine, up to this many lines open at once


@dataclass
class Machine:
    name: str
    target: str


@dataclass
class Outcome:
    machine: Machine
    status: str  # "ok", "failed" (the command's error: line) or "unreachable" (the line failed)
    output: str  # what the command printed
    error: str | None  # the error line, or why the line failed
    document: object = None  # the parsed document of a --json command that succeeded


def read_fleet(path: Path) -> list[Machine]:
    """The machines a fleet file lists: one per line, `NAME TARGET` or just `TARGET` (named by it);
    blank lines and `#` comments are skipped. ValueError names the file and line of a mistake."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    machines: list[Machine] = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise ValueError(f"{path}:{number}: expected NAME TARGET or TARGET, got {len(words)} words")
        name, target = (words[0], words[1]) if len(words) == 2 else (words[0], words[0])
        if any(m.name == name for m in machines):
            raise ValueError(f"{path}:{number}: a second machine named {name!r}")
        machines.append(Machine(name, target))
    if not machines:
        raise ValueError(f"{path}: lists no machines (one per line: NAME TARGET)")
    return machines


def run_on(machine: Machine, command: str, console_options: dict) -> Outcome:
    console = Console(machine.target, **console_options)
    try:
        result = console.result(command)
    except LineError as e:
        return Outcome(machine, "unreachable", "", str(e))
    try:
        value = answer(command, result)
    except CommandError as e:
        return Outcome(machine, "failed", result.output, e.message)
    return Outcome(machine, "ok", result.output, None, None if isinstance(value, str) else value)


def run_fleet(machines: list[Machine], command: str, jobs: int = MAX_JOBS, **console_options) -> list[Outcome]:
    """`command` on every machine at once; the outcomes in the file's order."""
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(machines)))) as pool:
        return list(pool.map(lambda m: run_on(m, command, console_options), machines))


def exit_status(outcomes: list[Outcome]) -> int:
    """3 if any machine was unreachable, else 1 if a command failed anywhere, else 0."""
    statuses = {o.status for o in outcomes}
    return EXIT_LINE if "unreachable" in statuses else EXIT_FAILED if "failed" in statuses else 0


def format_rows(outcomes: list[Outcome]) -> str:
    """One row per machine: its name, status and output; a many-line output continues under its column."""
    name_width = max(len("MACHINE"), *(len(o.machine.name) for o in outcomes))
    status_width = len("unreachable")
    rows = [f"{'MACHINE':<{name_width}}  {'STATUS':<{status_width}}  OUTPUT"]
    for o in outcomes:
        text = o.output.rstrip("\n").split("\n") if o.output.strip() else []
        if o.error is not None:
            text += o.error.split("\n")
        text = text or [""]
        rows.append(f"{o.machine.name:<{name_width}}  {o.status:<{status_width}}  {text[0]}".rstrip())
        rows += [f"{'':<{name_width + status_width + 4}}{more}".rstrip() for more in text[1:]]
    return "\n".join(rows) + "\n"


def as_document(command: str, outcomes: list[Outcome]) -> dict:
    return {"command": command,
            "machines": [{"name": o.machine.name, "target": o.machine.target, "status": o.status,
                          "output": o.output, "error": o.error, "document": o.document} for o in outcomes]}


def cmd_fleet(args: argparse.Namespace) -> int:
    try:
        command = check_command(" ".join(args.words))
        machines = read_fleet(Path(args.file))
    except ValueError as e:
        print(f"taipan fleet: {e}", file=sys.stderr)
        return EXIT_USAGE
    outcomes = run_fleet(machines, command, jobs=args.jobs, baud=args.baud, timeout=args.timeout,
                         escape=args.escape)
    if args.json:
        print(json.dumps(as_document(command, outcomes)))
    else:
        sys.stdout.write(format_rows(outcomes))
    return exit_status(outcomes)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="run one shell command on every Taipan a file lists, one row per machine",
                       description="Run one shell command on every machine FILE lists, all at once, and "
                       "print one row per machine (or one JSON document). FILE has one machine per line, "
                       f"NAME TARGET or TARGET; TARGET is {TARGET_FORMS}. Exit status: 0 it ran "
                       "everywhere, 1 it failed on some machine, 2 usage, 3 some machine was unreachable.")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document: each machine's status, output and error, and the parsed "
                   "document of a command given with --json")
    add_line_options(p, "seconds for each machine's exchange (default 30)")
    p.add_argument("--jobs", type=int, default=MAX_JOBS, help=f"machines reached at once (default {MAX_JOBS})")
    p.add_argument("file", help="the fleet file: NAME TARGET per line")
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="COMMAND", help="the shell command and its arguments")
    p.set_defaults(func=cmd_fleet)
