"""The cores-and-time benchmarks of `scripts/bench`: interference between CPUs, window jitter as a guest sees it, and the up-call round trip across CPUs."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pexpect.fdpexpect

from toolchain import build as builder
from toolchain.emulator import BochsRun, qemu_argv
from toolchain.iso import make_iso

MEMORY_MB = 256
BOCHS_CPU = "corei7_skylake_x"
TIMEOUT_S = {"qemu": 180, "bochs": 900}
PROMPT = b"taipan> "
BENCH_LINE = rb"bench (\w+) count=(\d+) cycles=(\d+) tsc_khz=(\d+)"
# Work per run, so that one run takes seconds in each emulator.
COMPUTE_COUNT = {"qemu": 1_000_000_000, "bochs": 20_000_000}
CPUID_COUNT = {"qemu": 20_000, "bochs": 5_000}
UPCALL_COUNT = {"qemu": 2_000, "bochs": 500}
# The cyclic CPU of the jitter run: the jitter guest's window, then a ticker's.
JITTER_WINDOW_MS = 5
JITTER_FRAME_MS = 10
JITTER_SAMPLES = 1000
# Nine tenths of the other window the guest waits through each frame: a
# shorter gap (a stall of the emulator's own host thread) is not a window start.
JITTER_GAP_US = 4500


@dataclass
class Interference:
    runs: int
    alone_s: float            # the victim's compute loop on CPU 1, nothing else running
    loaded_s: float           # the same with the hammer guest writing memory on CPU 2
    ratio: float              # loaded / alone
    alone_samples: list[float] = field(default_factory=list)
    loaded_samples: list[float] = field(default_factory=list)


@dataclass
class Jitter:
    frames: int
    frame_us: float
    window_us: float
    p99_us: float             # a window's start against its place on the frame grid, 99th percentile
    max_us: float
    p99_fraction: float       # of the window's length
    max_fraction: float
    skipped_frames: int       # frames the guest saw no start of (the host stalled the emulator)


@dataclass
class UpcallTrip:
    fast_us: float            # a CPUID exit on CPU 1, answered by the C fast path
    ap_upcall_us: float       # the same exit handed up from CPU 1 to MicroPython on CPU 0 and back
    bsp_upcall_us: float      # handed up from a partition on CPU 0 itself
    ap_ratio: float           # ap_upcall / fast
    bsp_ratio: float


@dataclass
class SmpResult:
    emulator: str
    interference: Interference
    jitter: Jitter
    upcall: UpcallTrip


def _partition(name: str, image: str, *, cpu: str, params: str = "", extra: str = "",
               memory: str = "8M") -> str:
    lines = ["[[partitions]]", f'name = "{name}"', f'memory = "{memory}"', f'image = "guest:{image}"', cpu]
    if params:
        lines.append(f"params = {{ {params} }}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n\n"


def _platform(cpus: int) -> str:
    return f"[platform]\ncpus = {cpus}\n\n"


def interference_configs(emulator: str) -> tuple[str, str]:
    """(alone, loaded): the victim's compute loop on CPU 1, without and with a hammer on CPU 2."""
    victim = _partition("victim", "bench", cpu="cpu = 1",
                        params=f'mode = "compute", count = {COMPUTE_COUNT[emulator]}')
    hammer = _partition("hammer", "hammer", cpu="cpu = 2", memory="64M")
    return _platform(3) + victim, _platform(3) + victim + hammer


def jitter_config() -> str:
    """CPU 1 cyclic: the jitter guest's window, then a ticker's, frame after frame."""
    rest = JITTER_FRAME_MS - JITTER_WINDOW_MS
    return (_platform(2)
            + _partition("jit", "jitter", cpu="cpus = [1]",
                         params=f"samples = {JITTER_SAMPLES}, gap_us = {JITTER_GAP_US}",
                         extra='console_size = "64K"')
            + _partition("other", "ticker", cpu="cpus = [1]")
            + "[[schedule]]\ncpu = 1\n"
            + f"major_frame_ms = {JITTER_FRAME_MS}\n"
            + f'windows = [{{ partition = "jit", ms = {JITTER_WINDOW_MS} }}, '
            + f'{{ partition = "other", ms = {rest} }}]\n')


_UPCALL = '[test]\ncpuid_upcall = ["bench"]\n'


def upcall_configs(emulator: str) -> dict[str, str]:
    """One bench partition each: CPUIDs on CPU 1 by the fast path, handed up from CPU 1, from CPU 0."""
    fast = f'mode = "cpuid", count = {CPUID_COUNT[emulator]}'
    up = f'mode = "cpuid", count = {UPCALL_COUNT[emulator]}'
    return {
        "fast": _platform(2) + _partition("bench", "bench", cpu="cpu = 1", params=fast),
        "ap": _platform(2) + _partition("bench", "bench", cpu="cpu = 1", params=up) + _UPCALL,
        "bsp": _platform(2) + _partition("bench", "bench", cpu="cpus = [0]", params=up) + _UPCALL,
    }


def _image(config_text: str, name: str, work: Path) -> Path:
    path = work / f"{name}.toml"
    path.write_text(config_text)
    return builder.build(quiet=True, config_path=path, image=f"bench-smp-{name}", test_hooks=True)


@contextmanager
def _booted(emulator: str, elf: Path, cpus: int, work: Path) -> Iterator[pexpect.spawnbase.SpawnBase]:
    """Taipan at its prompt under QEMU TCG (-cpu EPYC) or Bochs (the ISO, a VT-x CPU)."""
    timeout = TIMEOUT_S[emulator]
    if emulator == "qemu":
        argv = qemu_argv(elf, serial="stdio", smp=cpus, memory_mb=MEMORY_MB, no_reboot=True)
        child = pexpect.spawn(argv[0], argv[1:], timeout=timeout)
        close: Callable[[], None] = lambda: child.terminate(force=True)  # noqa: E731
    else:
        run_dir = work / f"bochs-{elf.stem}"
        run_dir.mkdir(parents=True, exist_ok=True)
        iso = make_iso(elf, run_dir / "taipan.iso")
        bochs = BochsRun(iso, run_dir, cpu_model=BOCHS_CPU, memory_mb=MEMORY_MB, cpus=cpus).__enter__()
        child = pexpect.fdpexpect.fdspawn(bochs.fileno(), timeout=timeout)
        close = bochs.close
    try:
        child.expect_exact(PROMPT)
        yield child
    finally:
        close()


def _ended(child: pexpect.spawnbase.SpawnBase, name: str) -> None:
    """Wait for the manager's announcement that `name` exited with code 0."""
    got = child.expect([rf"taipan: {name} exited with code 0".encode(),
                        rf"taipan: ({name} faulted[^\r\n]*|{name} stopped[^\r\n]*)".encode()])
    if got != 0:
        raise RuntimeError(child.match.group(1).decode(errors="replace"))


def _log(child: pexpect.spawnbase.SpawnBase, name: str, lines: int) -> str:
    child.send(f"log {name} -n {lines}\r".encode())
    child.expect_exact(PROMPT)
    return child.before.decode(errors="replace")


def _bench_seconds(text: str) -> tuple[int, float]:
    match = re.search(BENCH_LINE.decode(), text)
    if match is None:
        raise RuntimeError(f"no bench line in: {text[-300:]!r}")
    count, cycles, khz = int(match.group(2)), int(match.group(3)), int(match.group(4))
    return count, cycles / (khz * 1000)


def _run_bench(emulator: str, elf: Path, cpus: int, work: Path, name: str) -> tuple[int, float]:
    """Boot, wait for bench partition `name` to finish, return its loop count and seconds."""
    with _booted(emulator, elf, cpus, work) as child:
        _ended(child, name)
        return _bench_seconds(_log(child, name, 5))


def measure_interference(emulator: str, runs: int, work: Path) -> Interference:
    alone_cfg, loaded_cfg = interference_configs(emulator)
    alone = _image(alone_cfg, "interference-alone", work)
    loaded = _image(loaded_cfg, "interference-loaded", work)
    a, b = [], []
    for _ in range(runs):  # alternated, so drift in the host's load hits both alike
        a.append(_run_bench(emulator, alone, 3, work, "victim")[1])
        b.append(_run_bench(emulator, loaded, 3, work, "victim")[1])
    ma, mb = statistics.median(a), statistics.median(b)
    return Interference(runs, ma, mb, mb / ma, a, b)


def jitter_stats(starts: list[int], tsc_khz: int) -> Jitter:
    """Each start's distance from its place on the frame grid the first start defines."""
    frame = JITTER_FRAME_MS * tsc_khz
    slots = [round(s / frame) for s in starts]
    late = [s - k * frame for s, k in zip(starts, slots, strict=True)]
    # The grid's origin is the first start, itself perhaps late: measure from the earliest.
    base = min(late)
    us = sorted((d - base) * 1000 / tsc_khz for d in late)
    p99 = us[min(len(us) - 1, int(0.99 * len(us)))]
    window_us = JITTER_WINDOW_MS * 1000
    return Jitter(frames=len(starts), frame_us=JITTER_FRAME_MS * 1000, window_us=window_us,
                  p99_us=p99, max_us=us[-1], p99_fraction=p99 / window_us, max_fraction=us[-1] / window_us,
                  skipped_frames=slots[-1] + 1 - len(set(slots)))


def measure_jitter(emulator: str, work: Path) -> Jitter:
    elf = _image(jitter_config(), "jitter", work)
    with _booted(emulator, elf, 2, work) as child:
        _ended(child, "jit")
        text = _log(child, "jit", JITTER_SAMPLES + 10)
    starts = [int(v) for v in re.findall(r"jitter jit start \d+ (\d+)", text)]
    rate = re.search(r"jitter jit tsc_khz=(\d+)", text)
    if len(starts) != JITTER_SAMPLES or rate is None:
        raise RuntimeError(f"the jitter guest printed {len(starts)} of {JITTER_SAMPLES} starts")
    return jitter_stats(starts, int(rate.group(1)))


def measure_upcall(emulator: str, work: Path) -> UpcallTrip:
    per_exit = {}
    for name, text in upcall_configs(emulator).items():
        elf = _image(text, f"upcall-{name}", work)
        count, seconds = _run_bench(emulator, elf, 2, work, "bench")
        per_exit[name] = seconds * 1e6 / count
    return UpcallTrip(per_exit["fast"], per_exit["ap"], per_exit["bsp"],
                      per_exit["ap"] / per_exit["fast"], per_exit["bsp"] / per_exit["fast"])


def measure(emulator: str, *, runs: int, work: Path) -> SmpResult:
    work.mkdir(parents=True, exist_ok=True)
    return SmpResult(emulator, measure_interference(emulator, runs, work), measure_jitter(emulator, work),
                     measure_upcall(emulator, work))


def format_result(r: SmpResult) -> list[str]:
    i, j, u = r.interference, r.jitter, r.upcall
    return [
        f"  interference ({r.emulator}): compute on CPU 1 alone {i.alone_s:.3f} s, beside a memory "
        f"hammer on CPU 2 {i.loaded_s:.3f} s: {i.ratio:.3f}x (median of {i.runs})",
        f"  window jitter ({r.emulator}): {j.frames} frames of {j.frame_us / 1000:.0f} ms, a "
        f"{j.window_us / 1000:.0f} ms window starts p99 {j.p99_us:.0f} us ({100 * j.p99_fraction:.1f}% of it), "
        f"max {j.max_us:.0f} us ({100 * j.max_fraction:.1f}%); {j.skipped_frames} frames unseen",
        f"  up-call round trip ({r.emulator}): CPUID fast path on CPU 1 {u.fast_us:.1f} us; handed up "
        f"from CPU 1 to MicroPython on CPU 0 {u.ap_upcall_us:.1f} us ({u.ap_ratio:.1f}x); from a "
        f"partition on CPU 0 {u.bsp_upcall_us:.1f} us ({u.bsp_ratio:.1f}x)",
    ]
