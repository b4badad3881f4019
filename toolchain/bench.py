"""The benchmark behind `scripts/bench`: image size by part, MicroPython heap after boot, boot time against a trivial kernel, and partitions' exit, timer-interrupt and compute costs (CPUID against a minimal hypervisor's)."""

from __future__ import annotations

import argparse
import functools
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
import pexpect.fdpexpect

from guests import bench as bench_guest
from guests.trivial import write_kernel
from toolchain import bench_floor, bench_smp, verify
from toolchain import build as builder
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
class PartitionCosts:
    """One emulator's partition figures: medians of guest-TSC seconds, and the samples.

    Every time is the bench guest's own RDTSC delta over its loop divided by
    its TSC rate, so Taipan's share (exits, slices, MicroPython) is inside it.
    Under QEMU TCG the TSC follows the host clock; under Bochs it counts
    emulated instructions, so Bochs's figures are emulated, not wall, time.
    """
    runs: int
    cpuid_count: int
    upcall_count: int
    compute_count: int
    fast_exit_us: float          # one CPUID exit answered by the C fast path
    upcall_exit_us: float        # the same exit handed up to MicroPython policy
    upcall_ratio: float          # upcall / fast
    bare_cpuid_us: float         # one CPUID with no hypervisor underneath
    fast_exits: int              # CPUID exits `ps` counted for the fast-path partition
    upcall_exits: int            # and for the upcall partition
    compute_taipan_s: float      # the compute loop as a Taipan partition
    compute_bare_s: float        # the same ELF run directly by the emulator
    compute_ratio: float         # taipan / bare; 1.0 is the goal
    # The same CPUID loop under toolchain/bench_floor.py's minimal hypervisor,
    # run next to the fast-path partition in each round.
    floor_exit_us: float = 0.0       # one CPUID exit under the floor (its guest's own PIT rate)
    fast_exit_cycles: float = 0.0    # guest TSC ticks per exit: Taipan's fast path
    floor_exit_cycles: float = 0.0   # and the floor's (one TSC, so no rate's noise in the ratio)
    floor_ratio: float = 0.0         # fast / floor per round, then the median; goal <= 1.2
    floor_exits: int = 0             # CPUID exits the floor counted
    # One APIC timer interrupt delivered into the guest (arm, HLT, handler, EOI).
    timer_count: int = 0
    timer_irq_us: float = 0.0        # under Taipan
    bare_timer_us: float = 0.0       # the same kernel run bare (the emulator's own APIC)
    timer_ratio: float = 0.0         # timer interrupt / fast-path CPUID exit, under Taipan
    samples: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Result:
    elf: str
    image: Image
    heap: Heap
    boot: dict[str, BootTimes]
    partitions: dict[str, PartitionCosts] = field(default_factory=dict)
    smp: dict[str, bench_smp.SmpResult] = field(default_factory=dict)


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


def _spawn_qemu(kernel: Path, stderr_log: Path, **options: object) -> pexpect.spawn:
    """QEMU on a pty with its serial console on stdout; its stderr goes to a log.

    Keeping stderr off the pty means TCG's feature warnings can never match a
    pattern, and the first bytes read really are the guest's serial output.
    """
    argv = qemu_argv(kernel, no_reboot=True, **options)

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


# ---- partitions: one CPUID exit on each path, and a compute loop's overhead ----

PARTITION = "bench"
# Up to the line's end: serial output arrives in pieces, and a match on
# "tsc=h" of "tsc=hypercall" would be a wrong answer, not a late one.
BENCH_LINE = rb"bench (\w+) count=(\d+) cycles=(\d+) tsc_khz=(\d+) tsc=(\w+)\r*\n"
# (CPUID exits, compute iterations) per emulator. QEMU's compute loop is the
# guest's default, about 2 s; Bochs runs about 100M instructions a second, so
# it gets a shorter loop (4 instructions an iteration: 4 s of emulated time).
COUNTS = {"qemu": (100_000, bench_guest.DEFAULT_COUNT["compute"]), "bochs": (100_000, 100_000_000)}
SMALL_COUNTS = {"qemu": (2_000, 20_000_000), "bochs": (2_000, 2_000_000)}
# Timer interrupts a run (normal, --small): each is an MMIO write to arm the
# timer, a HLT and an EOI under Taipan, three exits and one injection.
TIMER_COUNTS = {"qemu": (20_000, 500), "bochs": (5_000, 200)}
# The up-call loop is shorter: since up-calls became messages to CPU 0's
# management window, one costs milliseconds (about 4.5 ms under QEMU TCG),
# so 100,000 of them would take the better part of ten minutes a run.
UPCALL_COUNTS = {"qemu": 10_000, "bochs": 2_000}
# A bench partition takes seconds under QEMU: a run that hangs (as the timer run did
# before the lost wake-up of docs/interrupts.md was fixed) is named after 3 minutes.
PARTITION_TIMEOUT_S = {"qemu": 180, "bochs": 3600}
BENCH_MEMORY_MB = 256
BOCHS_CPU = "corei7_skylake_x"  # VT-x + EPT + unrestricted guest, as the tests use


@dataclass(frozen=True)
class BenchLine:
    """What the bench guest printed: its loop, the TSC ticks it took, the TSC rate and its source."""
    mode: str
    count: int
    cycles: int
    tsc_khz: int
    source: str  # "hypercall" (Taipan's measurement) or "pit" (its own)

    @property
    def seconds(self) -> float:
        if self.tsc_khz <= 0:
            raise RuntimeError(f"the bench guest reports no TSC rate: {self}")
        return self.cycles / (self.tsc_khz * 1000)


def _bench_line(match: re.Match[bytes]) -> BenchLine:
    mode, count, cycles, khz, source = match.groups()
    return BenchLine(mode.decode(), int(count), int(cycles), int(khz), source.decode())


def bench_config(mode: str, count: int, *, upcall: bool = False) -> str:
    """A system description (TOML) with one bench partition."""
    lines = ["[[partitions]]", f'name = "{PARTITION}"', 'memory = "4M"', 'image = "guest:bench"',
             f'params = {{ mode = "{mode}", count = {count} }}']
    if upcall:
        lines += ["[test]", f'cpuid_upcall = ["{PARTITION}"]']
    return "\n".join(lines) + "\n"


def _expect(child: pexpect.spawnbase.SpawnBase, pattern: bytes | list[bytes], timeout: float,
            what: str) -> int:
    try:
        return child.expect(pattern, timeout=timeout)
    except (pexpect.TIMEOUT, pexpect.EOF) as error:
        raise RuntimeError(f"{what}: never saw {pattern!r}; output tail: "
                           f"{(child.before or b'')[-400:]!r}") from error


def run_partition(emulator: str, kernel: Path, work: Path) -> tuple[BenchLine, int]:
    """Boot a Taipan image (an ELF for QEMU, an ISO for Bochs) whose bench partition starts at
    boot; return its line and the CPUID exits `ps` counted for it."""
    timeout = PARTITION_TIMEOUT_S[emulator]
    if emulator == "qemu":
        child = _spawn_qemu(kernel, work.parent / "qemu.stderr", memory_mb=BENCH_MEMORY_MB)
        close: Callable[[], None] = functools.partial(_close, child)
    else:
        work.mkdir(parents=True, exist_ok=True)
        bochs = BochsRun(kernel, work, cpu_model=BOCHS_CPU, memory_mb=BENCH_MEMORY_MB).__enter__()
        close = bochs.close
        child = pexpect.fdpexpect.fdspawn(bochs.fileno(), timeout=timeout)
    try:
        # Wait for the hypervisor's own announcement rather than polling `ps`:
        # a typed command runs in MicroPython between slices and would be
        # counted in the partition's time.
        outcome = _expect(child, [rb"taipan: bench exited with code (\d+)",
                                  rb"taipan: (bench faulted: [^\r\n]*|bench stopped[^\r\n]*)"],
                          timeout, f"{emulator}: the bench partition")
        if outcome != 0:
            raise RuntimeError(f"{emulator}: {child.match.group(1).decode(errors='replace')}")
        child.send("ps\r")
        _expect(child, rb"NAME +STATE[^\n]*\n(.*?)taipan> ", 60, f"{emulator}: ps")
        table = child.match.group(1)
        row = re.search(rb"^bench +(\S+)[^\n]*", table, re.MULTILINE)
        if row is None or row.group(1) != b"exited(0)":
            raise RuntimeError(f"{emulator}: ps does not show bench exited(0): {table!r}")
        exits = re.search(rb"\bcpuid=(\d+)", row.group(0))
        child.send(f"log {PARTITION}\r")
        _expect(child, BENCH_LINE, 60, f"{emulator}: log {PARTITION}")
        return _bench_line(child.match), int(exits.group(1)) if exits else 0
    finally:
        close()


def run_bare(emulator: str, kernel: Path, work: Path) -> BenchLine:
    """The bench kernel (an ELF for QEMU, an ISO for Bochs) run directly by the emulator."""
    timeout = PARTITION_TIMEOUT_S[emulator]
    if emulator == "qemu":
        child = _spawn_qemu(kernel, work.parent / "qemu.stderr", memory_mb=BENCH_MEMORY_MB)
        try:
            _expect(child, BENCH_LINE, timeout, "qemu: the bare bench kernel")
            return _bench_line(child.match)
        finally:
            _close(child)
    work.mkdir(parents=True, exist_ok=True)
    with BochsRun(kernel, work, cpu_model=BOCHS_CPU, memory_mb=BENCH_MEMORY_MB) as run:
        return _bench_line(run.follow(BENCH_LINE, timeout=timeout))


def run_floor(emulator: str, kernel: Path, work: Path) -> tuple[BenchLine, int]:
    """The floor image (an ELF for QEMU, an ISO for Bochs): the guest's line and the exits it counted."""
    timeout = PARTITION_TIMEOUT_S[emulator]
    # A floor that cannot run says why in one "floor: ..." line, before or after the guest's.
    guest, end = [BENCH_LINE, bench_floor.FLOOR_ERROR], [bench_floor.FLOOR_LINE, bench_floor.FLOOR_ERROR]
    if emulator == "qemu":
        child = _spawn_qemu(kernel, work.parent / "qemu.stderr", memory_mb=BENCH_MEMORY_MB)
        try:
            matches = []
            for patterns in (guest, end):
                if _expect(child, patterns, timeout, "qemu: the floor") != 0:
                    raise RuntimeError(f"qemu: {child.match.group(0).decode(errors='replace').strip()}")
                matches.append(child.match)
        finally:
            _close(child)
    else:
        work.mkdir(parents=True, exist_ok=True)
        with BochsRun(kernel, work, cpu_model=BOCHS_CPU, memory_mb=BENCH_MEMORY_MB) as run:
            matches = []
            for patterns in (guest, end):
                match = run.follow(b"|".join(b"(?:%s)" % p for p in patterns), timeout=timeout)
                first = re.match(patterns[0], match.group(0))
                if first is None:
                    raise RuntimeError(f"bochs: {match.group(0).decode(errors='replace').strip()}")
                matches.append(first)
    return _bench_line(matches[0]), int(matches[1].group(2))


def floor_image(emulator: str, cpuid_count: int, work: Path) -> Path:
    """Build the floor into build/bench/ (an ISO beside it in `work` for Bochs)."""
    elf = bench_floor.build(builder.ROOT / "build" / "bench" / f"floor-{cpuid_count}.elf",
                            count=cpuid_count)
    if emulator == "bochs":
        return make_iso(elf, work / "floor.iso", tree=work / "iso-floor")
    return elf


def _check_source(line: BenchLine, expected: str, what: str) -> BenchLine:
    # Under Taipan the rate must come from the hypercall (policy denies the
    # PIT to guests); "pit" there means the guest did not recognise Taipan.
    if line.source != expected:
        raise RuntimeError(f"{what}: TSC rate from {line.source}, expected {expected}: {line}")
    return line


def measure_partitions(emulator: str, *, runs: int, small: bool, work: Path,
                       progress: Callable[[str], None]) -> PartitionCosts:
    """Fast-path and upcall CPUID exits, and compute under Taipan against bare, on one emulator."""
    cpuid_count, compute_count = (SMALL_COUNTS if small else COUNTS)[emulator]
    upcall_count = min(cpuid_count, UPCALL_COUNTS[emulator])
    timer_count = TIMER_COUNTS[emulator][1 if small else 0]
    work.mkdir(parents=True, exist_ok=True)
    progress(f"{emulator}: building the bench images")
    configs = {"fast": bench_config("cpuid", cpuid_count),
               "upcall": bench_config("cpuid", upcall_count, upcall=True),
               "compute": bench_config("compute", compute_count),
               "timer": bench_config("timer", timer_count)}
    taipan: dict[str, Path] = {}
    for key, text in configs.items():
        path = work / f"{key}.toml"
        path.write_text(text)
        taipan[key] = builder.build(quiet=True, config_path=path, image=f"bench-{emulator}-{key}",
                                      test_hooks=True)
    floor = floor_image(emulator, cpuid_count, work)
    bare = {mode: work / f"bare-{mode}.elf" for mode in ("cpuid", "compute", "timer")}
    bare["cpuid"].write_bytes(bench_guest.kernel_bytes(mode="cpuid", count=cpuid_count))
    bare["compute"].write_bytes(bench_guest.kernel_bytes(mode="compute", count=compute_count))
    bare["timer"].write_bytes(bench_guest.kernel_bytes(mode="timer", count=timer_count))
    if emulator == "bochs":
        taipan = {k: make_iso(p, work / f"{k}.iso", tree=work / f"iso-{k}") for k, p in taipan.items()}
        bare = {k: make_iso(p, work / f"bare-{k}.iso", tree=work / f"iso-bare-{k}")
                for k, p in bare.items()}

    counter = iter(range(1 << 30))
    samples: dict[str, list[float]] = {k: [] for k in (
        "fast_exit_us", "upcall_exit_us", "bare_cpuid_us", "compute_taipan_s", "compute_bare_s",
        "floor_exit_us", "fast_exit_cycles", "floor_exit_cycles", "floor_ratio", "timer_irq_us",
        "bare_timer_us", "timer_ratio")}
    exits = {"fast": 0, "upcall": 0, "floor": 0}
    for i in range(runs):
        # One of each per round, so a change in the machine's load weighs on all alike.
        for key in ("fast", "upcall"):
            line, exits[key] = run_partition(emulator, taipan[key], work / f"run{next(counter)}")
            _check_source(line, "hypercall", f"{emulator} {key}")
            samples[f"{key}_exit_us"].append(line.seconds / line.count * 1e6)
            if key == "fast":
                samples["fast_exit_cycles"].append(line.cycles / line.count)
                # The floor right after the fast path: the pair shares the machine's load.
                floor_line, exits["floor"] = run_floor(emulator, floor, work / f"run{next(counter)}")
                _check_source(floor_line, "pit", f"{emulator} floor")
                samples["floor_exit_us"].append(floor_line.seconds / floor_line.count * 1e6)
                samples["floor_exit_cycles"].append(floor_line.cycles / floor_line.count)
                samples["floor_ratio"].append(samples["fast_exit_cycles"][-1]
                                              / samples["floor_exit_cycles"][-1])
        line, _ = run_partition(emulator, taipan["compute"], work / f"run{next(counter)}")
        samples["compute_taipan_s"].append(_check_source(line, "hypercall", f"{emulator} compute").seconds)
        line = run_bare(emulator, bare["compute"], work / f"run{next(counter)}")
        samples["compute_bare_s"].append(_check_source(line, "pit", f"{emulator} bare compute").seconds)
        line = _check_source(run_bare(emulator, bare["cpuid"], work / f"run{next(counter)}"), "pit",
                             f"{emulator} bare cpuid")
        samples["bare_cpuid_us"].append(line.seconds / line.count * 1e6)
        line, _ = run_partition(emulator, taipan["timer"], work / f"run{next(counter)}")
        samples["timer_irq_us"].append(_check_source(line, "hypercall", f"{emulator} timer").seconds
                                       / line.count * 1e6)
        samples["timer_ratio"].append(samples["timer_irq_us"][-1] / samples["fast_exit_us"][-1])
        line = _check_source(run_bare(emulator, bare["timer"], work / f"run{next(counter)}"), "pit",
                             f"{emulator} bare timer")
        samples["bare_timer_us"].append(line.seconds / line.count * 1e6)
        progress(f"  run {i + 1}/{runs}: CPUID exit {samples['fast_exit_us'][-1]:.2f} us fast, "
                 f"{samples['floor_exit_us'][-1]:.2f} us floor ({samples['floor_ratio'][-1]:.2f}x), "
                 f"{samples['upcall_exit_us'][-1]:.2f} us upcall; compute "
                 f"{samples['compute_taipan_s'][-1]:.3f} s taipan, "
                 f"{samples['compute_bare_s'][-1]:.3f} s bare; timer interrupt "
                 f"{samples['timer_irq_us'][-1]:.2f} us ({samples['timer_ratio'][-1]:.2f}x CPUID), "
                 f"{samples['bare_timer_us'][-1]:.2f} us bare")
    med = {k: statistics.median(v) for k, v in samples.items()}
    return PartitionCosts(
        runs=runs, cpuid_count=cpuid_count, upcall_count=upcall_count, compute_count=compute_count,
        fast_exit_us=med["fast_exit_us"], upcall_exit_us=med["upcall_exit_us"],
        upcall_ratio=med["upcall_exit_us"] / med["fast_exit_us"], bare_cpuid_us=med["bare_cpuid_us"],
        fast_exits=exits["fast"], upcall_exits=exits["upcall"],
        compute_taipan_s=med["compute_taipan_s"], compute_bare_s=med["compute_bare_s"],
        compute_ratio=med["compute_taipan_s"] / med["compute_bare_s"],
        floor_exit_us=med["floor_exit_us"], fast_exit_cycles=med["fast_exit_cycles"],
        floor_exit_cycles=med["floor_exit_cycles"], floor_ratio=med["floor_ratio"],
        floor_exits=exits["floor"], timer_count=timer_count, timer_irq_us=med["timer_irq_us"],
        bare_timer_us=med["bare_timer_us"], timer_ratio=med["timer_ratio"], samples=samples)


def run(*, runs: int = 5, only: str | None = None, elf: Path | None = None, small: bool = False,
        progress: Callable[[str], None] = lambda _: None) -> Result:
    """Build (unless `elf` is given) and measure everything; emulators limited to `only` if set,
    the partitions' loops shortened with `small`."""
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
        partitions: dict[str, PartitionCosts] = {}
        for emulator in EMULATORS:
            if only in (None, emulator):
                progress(f"{emulator}: partitions: CPUID exits fast path vs upcall, compute vs bare")
                partitions[emulator] = measure_partitions(emulator, runs=runs, small=small,
                                                          work=work / f"partitions-{emulator}",
                                                          progress=progress)
        smp: dict[str, bench_smp.SmpResult] = {}
        for emulator in EMULATORS:
            # The cross-CPU figures need seconds of frames each: left out of --small.
            if only in (None, emulator) and not small:
                progress(f"{emulator}: CPUs: interference, window jitter, up-call round trip")
                smp[emulator] = bench_smp.measure(emulator, runs=runs, work=work / f"smp-{emulator}")
    return Result(str(elf), _image(report), heap, boot, partitions, smp)


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
    if result.partitions:
        lines += ["", ("partitions, median of runs (the bench guest's RDTSC over its loop; "
                       "Bochs's TSC counts emulated instructions)"),
                  (f"  {'emulator':<10}{'runs':>5}{'CPUID exit: fast':>18}{'upcall':>12}{'ratio':>8}"
                   f"{'bare':>11}{'compute: taipan':>17}{'bare':>10}{'ratio':>8}")]
        for name, p in result.partitions.items():
            lines.append(f"  {name:<10}{p.runs:>5}{p.fast_exit_us:>15.2f} us{p.upcall_exit_us:>9.2f} us"
                         f"{p.upcall_ratio:>7.1f}x{p.bare_cpuid_us:>8.3f} us{p.compute_taipan_s:>15.3f} s"
                         f"{p.compute_bare_s:>8.3f} s{p.compute_ratio:>7.3f}x")
        for name, p in result.partitions.items():
            lines.append(f"  {name}: {p.cpuid_count:,} CPUIDs a run ({p.upcall_count:,} up-calls; "
                         "CPUID exits ps counted: "
                         f"{p.fast_exits:,} fast path, {p.upcall_exits:,} upcall); "
                         f"{p.compute_count:,} compute iterations")
        lines += ["", ("exit cost against the floor, median of runs (the same CPUID loop under a "
                       "minimal hypervisor, run beside the fast path; ratio from guest TSC ticks per exit, "
                       "pair by pair)"),
                  (f"  {'emulator':<10}{'runs':>5}{'taipan fast':>14}{'ticks':>10}"
                   f"{'floor':>12}{'ticks':>10}{'ratio':>8}{'  (goal <= 1.2)'}")]
        for name, p in result.partitions.items():
            lines.append(f"  {name:<10}{p.runs:>5}{p.fast_exit_us:>11.2f} us{p.fast_exit_cycles:>10,.0f}"
                         f"{p.floor_exit_us:>9.2f} us{p.floor_exit_cycles:>10,.0f}{p.floor_ratio:>7.2f}x")
        for name, p in result.partitions.items():
            lines.append(f"  {name}: the floor counted {p.floor_exits:,} CPUID exits")
        lines += ["", ("one APIC timer interrupt into the guest, median of runs (arm the one-shot timer, "
                       "HLT, handler, EOI; ratio to the fast-path CPUID exit, run by run)"),
                  f"  {'emulator':<10}{'runs':>5}{'count':>8}{'taipan':>12}{'bare':>12}{'/ CPUID':>9}"]
        for name, p in result.partitions.items():
            lines.append(f"  {name:<10}{p.runs:>5}{p.timer_count:>8,}{p.timer_irq_us:>9.2f} us"
                         f"{p.bare_timer_us:>9.2f} us{p.timer_ratio:>8.2f}x")
    if result.smp:
        lines += ["", "across CPUs (guest TSC; one partition per CPU unless said)"]
        for r in result.smp.values():
            lines += bench_smp.format_result(r)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Image size by part, MicroPython heap after boot, boot time under QEMU "
                    "TCG and Bochs against a trivial multiboot kernel, and partitions: a CPUID "
                    "exit on the C fast path against a minimal hypervisor's and as an upcall, "
                    "an APIC timer interrupt delivered into the guest, "
                    "a compute loop under Taipan against the same kernel run bare; across CPUs: "
                    "interference, window jitter and the up-call round trip.")
    parser.add_argument("--runs", type=int, default=5, help="boots per kernel and emulator (default 5)")
    parser.add_argument("--only", choices=EMULATORS, help="time only this emulator")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.add_argument("--elf", type=Path, help="measure this image instead of building build/taipan.elf")
    parser.add_argument("--small", action="store_true",
                        help="shorten the partitions' loops and leave out the cross-CPU figures "
                             "(for tests: behaviour, not figures)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # Progress goes to stderr so that --json leaves stdout one document.
    result = run(runs=args.runs, only=args.only, elf=args.elf, small=args.small,
                 progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps(asdict(result), indent=2) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
