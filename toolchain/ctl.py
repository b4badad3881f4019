"""`taipan ctl TARGET COMMAND...`: one shell command run over a Taipan serial line, its output and status."""
from __future__ import annotations

import argparse
import json
import sys

from toolchain import push, terminal
from toolchain.client import CommandError, Console, LineError, answer, check_command
from toolchain.host_console import parse_escape
from toolchain.serial_line import DEFAULT_BAUD, TARGET_FORMS, TARGET_HELP

EXIT_FAILED, EXIT_USAGE, EXIT_LINE = 1, 2, 3


def add_line_options(p: argparse.ArgumentParser, timeout_help: str) -> None:
    """The options every tool that runs commands by script takes: --timeout, --baud, --escape."""
    p.add_argument("--timeout", type=float, default=30.0, help=timeout_help)
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"serial device (or RFC 2217 port) speed (default {DEFAULT_BAUD})")
    p.add_argument("--escape", type=parse_escape, default=terminal.ESCAPE, metavar="KEY",
                   help="the target's console escape ([platform] console_escape; default Ctrl-]), sent "
                   "once if no prompt comes, to take the line back from a partition")


def cmd_ctl(args: argparse.Namespace) -> int:
    if args.words[:1] == ["push"]:
        return push.cmd_push(Console(args.target, baud=args.baud, timeout=args.timeout, escape=args.escape),
                             args.words[1:])
    try:
        command = check_command(" ".join(args.words))
    except ValueError as e:
        print(f"taipan ctl: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json and "--json" not in command.split():
        command += " --json"
    console = Console(args.target, baud=args.baud, timeout=args.timeout, escape=args.escape)
    try:
        result = console.result(command)
    except LineError as e:
        print(f"taipan ctl: {e}", file=sys.stderr)
        return EXIT_LINE
    try:
        value = answer(command, result)
    except CommandError as e:
        sys.stdout.write(result.output)
        print(e.message if result.error is not None else f"taipan ctl: {e.message}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(value, indent=2))  # indented for people; `T ps --json` passes the shell's line
    else:
        sys.stdout.write(result.output)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ctl", help="run one shell command on a Taipan over its serial line, print its output",
                       description="Run one shell command on the Taipan at TARGET and print its output. "
                       "Exit status: 0 success, 1 the command failed (its error: line on stderr), "
                       "2 usage, 3 the line failed (cannot connect, no prompt, timeout). "
                       f"TARGET is {TARGET_FORMS}. '{push.USAGE}' replaces a partition's policy "
                       "module on an image built with --dev (1: the image refused it).")
    p.add_argument("--json", action="store_true",
                   help="run the command with --json and print the parsed document (indented)")
    add_line_options(p, "seconds for the whole exchange (default 30)")
    p.add_argument("target", help=TARGET_HELP)
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="COMMAND", help="the shell command and its arguments")
    p.set_defaults(func=cmd_ctl)
