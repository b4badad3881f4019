"""Command line for writing one builtin guest image to a file: `python -m guests GUEST OUT`."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from guests import BUILTIN, build_guest


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"parameter {text!r} is not KEY=VALUE")
    try:
        return key, ast.literal_eval(value)  # numbers stay numbers; bare words stay strings
    except (ValueError, SyntaxError):
        return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m guests", description=__doc__)
    parser.add_argument("guest", choices=sorted(BUILTIN))
    parser.add_argument("out", type=Path, help="file to write (raw binary or ELF32)")
    parser.add_argument("--name", default="guest", help="partition name (default: guest)")
    parser.add_argument("--memory", type=lambda s: int(s, 0), default=16 << 20,
                        help="partition memory in bytes (default: 16 MiB)")
    parser.add_argument("--param", type=_param, action="append", default=[],
                        help="builder parameter KEY=VALUE, repeatable (e.g. period_ms=100)")
    args = parser.parse_args(argv)
    image = build_guest(args.guest, name=args.name, memory=args.memory, **dict(args.param))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(image.data)
    print(f"{args.out}: {image.kind}, {len(image.data)} bytes, entry {image.entry:#x}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
