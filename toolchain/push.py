"""`taipan ctl TARGET push FILE --partition NAME`: a partition's policy module replaced while it runs, on a development image, through the raw REPL."""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from toolchain import build as builder
from toolchain import micropython, user_modules
from toolchain.client import Console, LineError

EXIT_REFUSED, EXIT_USAGE, EXIT_LINE = 1, 2, 3
USAGE = "taipan ctl TARGET push FILE --partition NAME"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="taipan ctl TARGET push", usage=USAGE,
                                description="Compile FILE with the build's mpy-cross and make it partition "
                                "NAME's policy module, on an image built with --dev.")
    p.add_argument("file", help="the new policy, a Python file")
    p.add_argument("--partition", required=True, metavar="NAME", help="the partition whose policy it replaces")
    return p


def metal_code(partition: str, shown: str, mpy: bytes) -> str:
    """The Python the raw REPL runs: usermods.push with the bytes and their sha256, all in ASCII."""
    digest = hashlib.sha256(mpy).hexdigest()
    return (f"import usermods\nusermods.push({ascii(partition)}, {ascii(shown)}, {mpy!r}, {ascii(digest)})\n")


def refusal(traceback: str) -> str:
    """The metal's reason, from the traceback's last line ("ValueError: why" -> "why")."""
    last = [line for line in traceback.strip().splitlines() if line.strip()][-1]
    kind, _, why = last.partition(": ")
    return why if kind == "ValueError" and why else last


def cmd_push(console: Console, words: list[str]) -> int:
    args = _parser().parse_args(words)
    source = Path(args.file)
    if source.suffix != ".py" or not source.is_file():
        print(f"taipan ctl push: {args.file}: " + ("no such file" if not source.exists() else
                                                   "must be a Python file (.py)"), file=sys.stderr)
        return EXIT_USAGE
    # The build's mpy-cross: its bytes are what the interpreter on the metal loads.
    tree = micropython.source_tree(builder.ROOT / "build")
    try:
        mpy = user_modules.compile_source(micropython.mpy_cross(tree, os.cpu_count() or 1), source, args.file)
    except user_modules.CompileError as e:
        print(f"taipan ctl push: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        output, error = console.exec_raw(metal_code(args.partition, args.file, mpy))
    except LineError as e:
        print(f"taipan ctl push: {e}", file=sys.stderr)
        return EXIT_LINE
    if error.strip():
        print(f"taipan ctl push: {refusal(error)}", file=sys.stderr)
        return EXIT_REFUSED
    sys.stdout.write(output)
    print(f"{args.partition}: policy replaced by {args.file} (sha256 {hashlib.sha256(mpy).hexdigest()})")
    return 0
