"""Progress of long build steps: a redrawn line on a terminal, one line per step elsewhere."""
from __future__ import annotations

import io
import re
import time

import pytest
from conftest import taipan

from toolchain import micropython
from toolchain.apt import measure_download
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
        measure_download(tmp_path, {micropython.ORIG_TARBALL: micropython.ORIG_BYTES})(step)
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


def test_a_download_of_several_files_counts_each_up_to_its_size(tmp_path):
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "kernel.deb").write_bytes(b"\0" * 3_000_000)
    (tmp_path / "busybox.deb").write_bytes(b"\0" * 1_500_000)  # more than pinned: counted as its size
    step = Progress(io.StringIO(), tty=False)
    with step.step("download") as measured:
        measure_download(tmp_path, {"kernel.deb": 6_000_000, "busybox.deb": 1_000_000})(measured)
    assert measured.fraction == pytest.approx(4 / 7)
    assert measured.note == "4.0 of 7.0 MB"


def test_images_linux_reports_its_steps_one_line_each_off_a_terminal():
    run = taipan("images", "linux")
    assert run.returncode == 0, run.stderr
    assert re.search(r"^Linux images: the kernel and a busybox initramfs: done in \d+\.\ds$", run.stderr, re.M), run.stderr
    assert "\r" not in run.stderr
    assert "kernel: build/images/linux/vmlinuz" in run.stdout
