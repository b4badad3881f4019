"""`taipan mptest`: MicroPython's own tests/run-tests.py run against Taipan's interpreter over QEMU's serial line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toolchain import build as builder
from toolchain import config, emulator, micropython

ROOT = builder.ROOT
EXCLUDED_FILE = ROOT / "tests" / "mptest_excluded.txt"
OUT_DIR = ROOT / "build" / "mptest"
SUMMARY_JSON = OUT_DIR / "summary.json"

DEFAULT_DIRS = ["basics", "micropython", "misc", "extmod", "float"]
# Pass rate (passed / (passed + failed)) below which the run fails.
THRESHOLD = 0.95
# The same memory `taipan run` boots with; the MicroPython heap is sized from it.
MEMORY_MB = 256

# Named selections. "ci" is what `make test` (tests/test_mptest.py) runs: the
# whole default set, because that measured ~2 minutes serially on the 2-core
# build machine (well under the ~4 minute budget); if the suite grows past the
# budget, narrow "ci" here rather than sampling at random, so it stays
# deterministic. "quick" is a ~10 s smoke run: the interpreter-specific tests
# (native/viper emitters, const, heap) and double-precision floats.
SUBSETS: dict[str, list[str]] = {
    "ci": DEFAULT_DIRS,
    "quick": ["micropython", "float"],
}

_PERFORMED = re.compile(r"^(\d+) tests performed \((\d+) individual testcases\)", re.MULTILINE)
_PASSED = re.compile(r"^(\d+) tests passed", re.MULTILINE)
_SKIPPED = re.compile(r"^(\d+) tests skipped:?(.*)$", re.MULTILINE)
_FAILED = re.compile(r"^(\d+) tests failed:?(.*)$", re.MULTILINE)
_EXCLUDED_LINE = re.compile(r"^(\S+\.py)\s+#\s*(\S.*)$")


class ExclusionError(ValueError):
    """A line of tests/mptest_excluded.txt is not `path # reason`."""


@dataclass
class Summary:
    performed: int = 0
    testcases: int = 0
    passed: int = 0
    skipped: int = 0
    failed: int = 0
    skipped_tests: list[str] = field(default_factory=list)
    failed_tests: list[str] = field(default_factory=list)
    complete: bool = False  # run-tests printed its summary (it did not abort)

    @property
    def pass_rate(self) -> float:
        ran = self.passed + self.failed
        return self.passed / ran if ran else 0.0

    def merge(self, other: Summary) -> Summary:
        return Summary(
            performed=self.performed + other.performed,
            testcases=self.testcases + other.testcases,
            passed=self.passed + other.passed,
            skipped=self.skipped + other.skipped,
            failed=self.failed + other.failed,
            skipped_tests=sorted(self.skipped_tests + other.skipped_tests),
            failed_tests=sorted(self.failed_tests + other.failed_tests),
            complete=self.complete and other.complete,
        )


def load_excluded(path: Path = EXCLUDED_FILE) -> dict[str, str]:
    """Test path -> reason, from the exclusion file (blank and `#` lines are commentary)."""
    excluded: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _EXCLUDED_LINE.match(line)
        if not m:
            raise ExclusionError(f"{path.name}:{number}: want `dir/test.py # reason`, got {raw!r}")
        if m.group(1) in excluded:
            raise ExclusionError(f"{path.name}:{number}: {m.group(1)} listed twice")
        excluded[m.group(1)] = m.group(2).strip()
    return excluded


def exclude_regex(test: str) -> str:
    # run-tests searches (not matches) each regex in the path it was given,
    # e.g. "basics/x.py"; anchored, an entry drops exactly that one test.
    return "^" + re.escape(test) + "$"


def parse_summary(output: str) -> Summary:
    """Read run-tests' closing lines; a run that aborted before them is `complete=False`."""
    s = Summary()
    if m := _PERFORMED.search(output):
        s.performed, s.testcases = int(m.group(1)), int(m.group(2))
        s.complete = True
    if m := _PASSED.search(output):
        s.passed = int(m.group(1))
    if m := _SKIPPED.search(output):
        s.skipped, s.skipped_tests = int(m.group(1)), m.group(2).split()
    if m := _FAILED.search(output):
        s.failed, s.failed_tests = int(m.group(1)), m.group(2).split()
    return s


def list_tests(tree: Path, dirs: list[str]) -> list[str]:
    """The test files run-tests would find for `-d dirs`, in its (sorted) order."""
    tests_dir = tree / "tests"
    found = [str(p.relative_to(tests_dir)) for d in dirs for p in (tests_dir / d).glob("*.py")]
    return sorted(found)


def _target(elf: Path) -> str:
    # The demo image, booted on as many CPUs as it plans for.
    cpus = config.load(builder.DEFAULT_CONFIG).platform.cpus
    argv = emulator.qemu_argv(elf, memory_mb=MEMORY_MB, smp=cpus, serial="pty", no_reboot=True)
    # pyboard.py splits the execpty command on whitespace, with no quoting.
    if any(not a or any(c.isspace() for c in a) for a in argv):
        raise ValueError(f"execpty cannot pass a QEMU argument containing whitespace: {argv}")
    return "execpty:" + " ".join(argv)


def _environment(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    # run-tests wants a unix micropython and mpy-cross paths even when it drives
    # a board; it runs mpy-cross for --via-mpy and CPython for tests without .exp.
    env["MICROPY_MICROPYTHON"] = env.get("MICROPY_MICROPYTHON", "/bin/false")
    env["MICROPY_MPYCROSS"] = str(tree / "mpy-cross" / "build" / "mpy-cross")
    env["MICROPY_CPYTHON3"] = sys.executable
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_shard(cmd: list[str], cwd: Path, env: dict[str, str], label: str,
               timeout: float | None, out: list[str]) -> int:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace",
                            start_new_session=True)
    # A wedged guest makes every test wait out pyboard's timeouts; a watchdog
    # ends the whole run (run-tests and its QEMU, one process group) instead.
    timer = threading.Timer(timeout, lambda: _kill_group(proc)) if timeout else None
    if timer:
        timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            print(label + line, end="", flush=True)
        return proc.wait()
    finally:
        if timer:
            timer.cancel()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass


def run(elf: Path, dirs: list[str] | None = None, jobs: int | None = None,
        subset: str | None = None, *, timeout: float | None = 1800.0,
        summary_path: Path = SUMMARY_JSON) -> int:
    """Run MicroPython's test suite on Taipan; 0 if the pass rate is at least 95%.

    `dirs` are run-tests `-d` folders (default basics micropython misc extmod
    float), or `subset` names a selection from SUBSETS (not both). `jobs` > 1
    splits the tests round-robin over that many QEMU instances, each driven by
    its own run-tests (run-tests itself runs board tests one at a time).
    """
    if subset is not None:
        if dirs:
            raise ValueError("give test dirs or a subset, not both")
        if subset not in SUBSETS:
            raise ValueError(f"unknown subset {subset!r}; known: {', '.join(sorted(SUBSETS))}")
        dirs = SUBSETS[subset]
    dirs = list(dirs or DEFAULT_DIRS)
    shards = max(1, jobs or 1)

    tree = micropython.source_tree(ROOT / "build")
    micropython.mpy_cross(tree, os.cpu_count() or 1)
    tests_dir = tree / "tests"
    for d in dirs:
        if not (tests_dir / d).is_dir():
            raise ValueError(f"no test folder {d!r} in {tests_dir}")
    excluded = load_excluded()
    excludes = [a for t in sorted(excluded) for a in ("-e", exclude_regex(t))]
    env = _environment(tree)
    target = _target(elf.resolve())
    OUT_DIR.mkdir(parents=True, exist_ok=True)

    if shards == 1:
        selections = [["-d", *dirs]]
    else:
        tests = list_tests(tree, dirs)
        selections = [tests[k::shards] for k in range(shards)]
    commands = []
    for k, selection in enumerate(selections):
        result_dir = OUT_DIR / (f"results-{k}" if shards > 1 else "results")
        commands.append([sys.executable, str(tests_dir / "run-tests.py"), "-t", target,
                         "-r", str(result_dir), *excludes, *selection])

    print(f"mptest: {' '.join(dirs)}" + (f" (subset {subset})" if subset else "")
          + f", {len(excluded)} excluded, {shards} QEMU instance(s)", flush=True)
    outputs: list[list[str]] = [[] for _ in commands]
    codes: list[int] = [0] * len(commands)
    start = time.monotonic()

    def shard(k: int) -> None:
        label = f"[{k}] " if shards > 1 else ""
        codes[k] = _run_shard(commands[k], tests_dir, env, label, timeout, outputs[k])

    threads = [threading.Thread(target=shard, args=(k,)) for k in range(len(commands))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start

    summary = Summary(complete=True)
    for out in outputs:
        summary = summary.merge(parse_summary("".join(out)))
    ok = summary.complete and summary.pass_rate >= THRESHOLD
    record = {
        **asdict(summary),
        "pass_rate": round(summary.pass_rate, 4),
        "threshold": THRESHOLD,
        "ok": ok,
        "wall_seconds": round(wall, 1),
        "dirs": dirs,
        "subset": subset,
        "shards": shards,
        "excluded": excluded,
        "run_tests_status": codes,
    }
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text(json.dumps(record, indent=2) + "\n")

    print(f"mptest: {summary.performed} performed, {summary.passed} passed, "
          f"{summary.skipped} skipped, {summary.failed} failed"
          + (f" ({' '.join(summary.failed_tests)})" if summary.failed_tests else ""))
    if not summary.complete:
        print("mptest: run-tests did not finish (see its output above)", file=sys.stderr)
    print(f"mptest: pass rate {summary.pass_rate:.1%} (need {THRESHOLD:.0%}), "
          f"{wall:.0f} s; summary in {summary_path}")
    return 0 if ok else 1
