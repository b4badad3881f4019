"""`taipan console TARGET`: this terminal joined to a Taipan serial line until the escape key."""
from __future__ import annotations

import argparse
import sys

from toolchain import terminal
from toolchain.client import Console, LineError
from toolchain.serial_line import DEFAULT_BAUD, TARGET_FORMS, TARGET_HELP

EXIT_LINE = 3  # as taipan ctl: the line failed (cannot connect, closed by the far end)


def parse_escape(text: str) -> int:
    """A control key written ^X, Ctrl-X or C-X (X one of @A-Z[\\]^_, any case) as its byte."""
    lowered = text.lower()
    for prefix in ("^", "ctrl-", "ctrl+", "c-"):
        if lowered.startswith(prefix) and len(text) == len(prefix) + 1:
            key = text[-1].upper()
            if "@" <= key <= "_":
                return ord(key) ^ 0x40
    raise argparse.ArgumentTypeError(f"{text!r} is not a control key; write it as ^] or Ctrl-] "
                                     "(one of @, A-Z, [, \\, ], ^, _)")


def key_name(byte: int) -> str:
    return "Ctrl-" + chr(byte ^ 0x40)


def cmd_console(args: argparse.Namespace) -> int:
    try:
        console = Console(args.target, baud=args.baud).open()
    except LineError as e:
        print(f"taipan console: {e}", file=sys.stderr)
        return EXIT_LINE
    with console:
        print(f"taipan: connected to {args.target}; {key_name(args.escape)} leaves "
              "(press Enter for the prompt)", file=sys.stderr, flush=True)
        why = terminal.attach(console.line, escape=args.escape)
    if why == "closed":
        print(f"\r\ntaipan console: {args.target}: the other end closed the connection", file=sys.stderr)
        return EXIT_LINE
    print(f"\r\ntaipan: left {args.target}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="join this terminal to a Taipan serial line (Ctrl-] leaves)",
                       description=f"Join this terminal to the Taipan at TARGET, {TARGET_FORMS}. "
                       "Every key, Ctrl-C included, goes to Taipan until the escape key. "
                       "Exit status: 0 left by the escape key, 3 the line failed or was closed.")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"serial device (or RFC 2217 port) speed (default {DEFAULT_BAUD})")
    p.add_argument("--escape", type=parse_escape, default=terminal.ESCAPE, metavar="KEY",
                   help="the key that leaves, as ^X or Ctrl-X (default Ctrl-])")
    p.add_argument("target", help=TARGET_HELP)
    p.set_defaults(func=cmd_console)
