"""Progress of long build steps: a redrawn line on a terminal, one line per step elsewhere."""
from __future__ import annotations

import io
import re
import time

import pytest
from conftest import taipan

from toolchain import micropython
from toolchain.progress import Progress


def test_not_on_a_terminal_each_step_prints_one_line_when_it_ends():
    out = io.StringIO()
    progress = Progress(out, tty=False)
    with progress.step("fetch") as step:
        step.update(0.5, "3.0 of 6.0 MB")
        time.sleep(0.25)
    with progress.step("compile"):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert re.fullmatch(r"fetch: done in 0\.\ds \(3\.0 of 6\.0 MB\)", lines[0]), lines
    assert re.fullmatch(r"compile: done in 0\.\ds", lines[1]), lines


def test_on_a_terminal_the_line_shows_the_percentage_or_a_spinner_and_the_time():
    out = io.StringIO()
    progress = Progress(out, tty=True)
    with progress.step("download") as step:
        step.update(0.25, "1.5 of 6.0 MB")
        time.sleep(0.35)
    with progress.step("cross-build"):
        time.sleep(0.35)
    text = out.getvalue()
    frames = text.split("\r\x1b[K")
    assert any(re.fullmatch(r"download:  25% +0\.\ds, 1\.5 of 6\.0 MB", f) for f in frames), frames
    spins = {m.group(1) for f in frames if (m := re.fullmatch(r"cross-build:   (.)  +0\.\ds", f))}
    assert len(spins) >= 2, frames  # the spinner turns while the step runs
    assert text.endswith("cross-build: done in 0.3s\n") or text.endswith("cross-build: done in 0.4s\n"), text


def test_a_failing_step_says_so_and_the_error_passes_on():
    out = io.StringIO()
    with pytest.raises(RuntimeError), Progress(out, tty=False).step("link"):
        raise RuntimeError("ld failed")
    assert out.getvalue().startswith("link: failed in ")


def test_the_download_is_measured_by_the_bytes_arrived(tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / micropython.ORIG_TARBALL).write_bytes(b"\0" * (micropython.ORIG_BYTES // 2))
    out = io.StringIO()
    with Progress(out, tty=False).step("download") as step:
        micropython._measure_download(tmp_path)(step)
    assert step.fraction == pytest.approx(0.5, abs=0.001)
    assert "(3.0 of 6.0 MB)" in out.getvalue()


def test_taipan_build_in_a_log_prints_each_step_then_where_the_image_is(taipan_elf):
    run = taipan("build", timeout=900)  # the session's build is done: this one finds little to do
    assert run.returncode == 0, run.stderr
    steps = run.stderr.splitlines()
    assert [line.split(":")[0] for line in steps] == [
        "generated headers and the partition table", "boot stub (keystone)", "MicroPython cross-build",
        "C core", "link and verify"], run.stderr
    assert all(re.search(r": done in \d+\.\ds", line) for line in steps) and "\r" not in run.stderr
    assert re.search(r"C core: done in .*\(\d+ files compiled\)", run.stderr)
    last = run.stdout.splitlines()[-1]
    assert re.fullmatch(r"taipan build: build/taipan\.elf for configs/demo\.toml, built and verified in "
                        r"\d+\.\ds", last), run.stdout
