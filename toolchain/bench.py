"""The benchmark behind `scripts/bench`: image size by part, MicroPython heap after boot, boot time against a trivial kernel."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pexpect

from guests.trivial import write_kernel
from toolchain import build as builder
from toolchain import verify
from toolchain.emulator import BochsRun, qemu_argv
from toolchain.iso import make_iso

PROMPT = "taipan> "
REPL_PROMPT = ">>> "
# The trivial kernel's whole output is "ok\n". Under Bochs, GRUB writes to
# COM1 before it, so "first serial byte" means the kernel's first byte: the
# same point in the boot (the guest runs) for both emulators.
TRIVIAL_OUTPUT = rb"ok\r*\n"
QEMU_TIMEOUT_S = 60
BOCHS_TIMEOUT_S = 300  # BIOS + GRUB + an emulated boot at 100 MIPS
EMULATORS = ("qemu", "bochs")


@dataclass
class BootTimes:
    """One emulator's medians (seconds) and the samples they came from."""
    runs: int
    taipan_s: float
    trivial_s: float
    ratio: float  # taipan / trivial
    taipan_samples: list[float] = field(default_factory=list)
    trivial_samples: list[float] = field(default_factory=list)


@dataclass
class Heap:
    total_bytes: int
    used_bytes: int
    free_bytes: int


@dataclass
class Image:
    file_bytes: int
    loaded_bytes: int
    memory_bytes: int
    parts: dict[str, dict[str, int]]  # part -> text/rodata/data/bss/total


@dataclass
class Result:
    elf: str
    image: Image
    heap: Heap
    boot: dict[str, BootTimes]


def image_report(elf: Path) -> verify.Report:
    """The verifier's report with parts attributed the way build.py's `_parts` does."""
    paths = builder.Paths(elf.parent.resolve())
    # The same object list build_core produces, without compiling again.
    core = [paths.obj / src.relative_to(builder.ROOT).with_suffix(".o")
            for folder in builder.SOURCE_FOLDERS for src in builder._sources(folder)]
    parts = builder._parts(paths, core)
    if not all(Path(obj).is_file() for objects in parts.values() for obj in objects):
        parts = {}  # an image from elsewhere (--elf): totals only, no attribution
    return verify.verify(elf, parts=parts)


def _image(report: verify.Report) -> Image:
    parts = {name: {**sizes, "total": sum(sizes.values())} for name, sizes in report.parts.items()}
    return Image(report.file_bytes, report.loaded_bytes, report.memory_bytes, parts)


def _spawn_qemu(kernel: Path, stderr_log: Path) -> pexpect.spawn:
    """QEMU on a pty with its serial console on stdout; its stderr goes to a log.

    Keeping stderr off the pty means TCG's feature warnings can never match a
    pattern, and the first bytes read really are the guest's serial output.
    """
    argv = qemu_argv(kernel, no_reboot=True)

    def to_log() -> None:
        fd = os.open(stderr_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)

    return pexpect.spawn(argv[0], argv[1:], timeout=QEMU_TIMEOUT_S, preexec_fn=to_log)


def _close(child: pexpect.spawn) -> None:
    child.terminate(force=True)
    child.close(force=True)


def time_qemu(kernel: Path, pattern: str | bytes, work: Path) -> float:
    """Seconds from spawning QEMU with `kernel` until `pattern` (regex) appears on COM1."""
    start = time.monotonic()
    child = _spawn_qemu(kernel, work / "qemu.stderr")
    try:
        child.expect(pattern)
        return time.monotonic() - start
    except (pexpect.TIMEOUT, pexpect.EOF) as error:
        raise RuntimeError(f"QEMU never printed {pattern!r}; output tail: {child.before[-300:]!r} "
                           f"(stderr: {work / 'qemu.stderr'})") from error
    finally:
        _close(child)


def time_bochs(iso: Path, pattern: str | bytes, work: Path) -> float:
    """Seconds from starting Bochs on `iso` until `pattern` (regex) appears on COM1."""
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with BochsRun(iso, work) as run:
        run.follow(pattern, timeout=BOCHS_TIMEOUT_S)
        return time.monotonic() - start


def read_heap(elf: Path, work: Path) -> Heap:
    """Boot under QEMU and ask the REPL for the heap right after boot, after a collection."""
    child = _spawn_qemu(elf, work / "qemu.stderr")
    try:
        child.expect_exact(PROMPT)
        # The console's readline takes CR as Enter, as a terminal sends it.
        child.send("py\r")
        child.expect_exact(REPL_PROMPT)
        child.send("import gc; gc.collect(); print(gc.mem_alloc(), gc.mem_free())\r")
        match = child.expect([rb"\n(\d+) (\d+)\r*\n", pexpect.TIMEOUT])
        if match != 0:
            raise RuntimeError(f"no heap figures from the REPL; output tail: {child.before[-300:]!r}")
        used, free = int(child.match.group(1)), int(child.match.group(2))
        child.expect_exact(REPL_PROMPT)
        child.send("\x04")  # Ctrl-D: back to the shell, proving the console is still sane
        child.expect_exact(PROMPT)
        return Heap(used + free, used, free)
    finally:
        _close(child)


def _median_pair(taipan: Callable[[], float], trivial: Callable[[], float], runs: int,
                 progress: Callable[[str], None]) -> BootTimes:
    # Alternate the two so a change in the shared machine's load during the
    # run weighs on both columns alike.
    taipan_samples, trivial_samples = [], []
    for i in range(runs):
        taipan_samples.append(taipan())
        trivial_samples.append(trivial())
        progress(f"  run {i + 1}/{runs}: taipan {taipan_samples[-1]:.3f} s, "
                 f"trivial {trivial_samples[-1]:.3f} s")
    t, b = statistics.median(taipan_samples), statistics.median(trivial_samples)
    return BootTimes(runs, t, b, t / b, taipan_samples, trivial_samples)


def run(*, runs: int = 5, only: str | None = None, elf: Path | None = None,
        progress: Callable[[str], None] = lambda _: None) -> Result:
    """Build (unless `elf` is given) and measure everything; emulators limited to `only` if set."""
    elf = elf or builder.build(quiet=True)
    report = image_report(elf)
    boot: dict[str, BootTimes] = {}
    with tempfile.TemporaryDirectory(prefix="taipan-bench-") as tmp:
        work = Path(tmp)
        progress("heap: booting QEMU for the REPL")
        heap = read_heap(elf, work)
        trivial_elf = write_kernel(work / "trivial.elf")
        counter = iter(range(1 << 30))
        if only in (None, "qemu"):
            progress("qemu: Taipan to prompt vs trivial kernel to first byte")
            boot["qemu"] = _median_pair(lambda: time_qemu(elf, re.escape(PROMPT), work),
                                        lambda: time_qemu(trivial_elf, TRIVIAL_OUTPUT, work),
                                        runs, progress)
        if only in (None, "bochs"):
            progress("bochs: building the ISOs")
            taipan_iso = make_iso(elf, work / "taipan.iso", tree=work / "iso-taipan")
            trivial_iso = make_iso(trivial_elf, work / "trivial.iso", tree=work / "iso-trivial")
            progress("bochs: Taipan to prompt vs trivial kernel to first byte")
            boot["bochs"] = _median_pair(
                lambda: time_bochs(taipan_iso, re.escape(PROMPT), work / f"bochs{next(counter)}"),
                lambda: time_bochs(trivial_iso, TRIVIAL_OUTPUT, work / f"bochs{next(counter)}"),
                runs, progress)
    return Result(str(elf), _image(report), heap, boot)


def format_result(result: Result) -> str:
    """The human-readable tables."""
    kinds = (*verify.KINDS, "total")
    img = result.image
    lines = [f"image {result.elf}",
             f"  file {img.file_bytes:,} B, loaded {img.loaded_bytes:,} B, "
             f"in memory {img.memory_bytes:,} B",
             f"  {'part':<14}" + "".join(f"{k:>11}" for k in kinds)]
    for name, sizes in img.parts.items():
        lines.append(f"  {name:<14}" + "".join(f"{sizes[k]:>11,}" for k in kinds))
    heap = result.heap
    lines += ["", "MicroPython heap right after boot (gc.collect(); gc.mem_alloc/mem_free)",
              f"  total {heap.total_bytes:,} B ({heap.total_bytes / 2**20:.1f} MiB), "
              f"used {heap.used_bytes:,} B, free {heap.free_bytes:,} B"]
    if result.boot:
        lines += ["", "boot time, median of runs (emulator start -> Taipan's prompt; "
                      "-> trivial kernel's first serial byte)",
                  f"  {'emulator':<10}{'runs':>5}{'taipan':>11}{'trivial':>11}{'ratio':>8}"]
        for name, t in result.boot.items():
            lines.append(f"  {name:<10}{t.runs:>5}{t.taipan_s:>10.3f}s{t.trivial_s:>10.3f}s"
                         f"{t.ratio:>7.2f}x")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Image size by part, MicroPython heap after boot, and boot time under QEMU "
                    "TCG and Bochs against a trivial multiboot kernel.")
    parser.add_argument("--runs", type=int, default=5, help="boots per kernel and emulator (default 5)")
    parser.add_argument("--only", choices=EMULATORS, help="time only this emulator")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--elf", type=Path, help="measure this image instead of building build/taipan.elf")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # Progress goes to stderr so that --json leaves stdout one document.
    result = run(runs=args.runs, only=args.only, elf=args.elf,
                 progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(asdict(result), indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
