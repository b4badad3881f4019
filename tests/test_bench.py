"""scripts/bench end to end under QEMU: its JSON has every field and plausible (positive) figures; the floor image on both vendors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from toolchain import bench, bench_floor

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def doc() -> dict:
    """One `scripts/bench --runs 1 --only qemu --json --small` run, shared by the tests below."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/bench"), "--runs", "1",
                           "--only", "qemu", "--json", "--small"],
                          capture_output=True, text=True, timeout=900, check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)  # stdout is one JSON document; progress went to stderr


@pytest.mark.boot
def test_bench_json_reports_sizes_heap_and_qemu_boot_times(doc: dict) -> None:
    # Behaviour, not speed: the numbers must exist and be positive, whatever the machine's load.

    image = doc["image"]
    for key in ("file_bytes", "loaded_bytes", "memory_bytes"):
        assert image[key] > 0
    assert {"boot stub", "C core", "MicroPython"} <= set(image["parts"])
    for sizes in image["parts"].values():
        assert set(sizes) == {"text", "rodata", "data", "bss", "total"}
        assert sizes["total"] == sum(sizes[k] for k in ("text", "rodata", "data", "bss")) > 0

    heap = doc["heap"]
    assert heap["total_bytes"] > heap["used_bytes"] > 0
    assert heap["total_bytes"] == heap["used_bytes"] + heap["free_bytes"]

    assert set(doc["boot"]) == {"qemu"}  # --only qemu
    qemu = doc["boot"]["qemu"]
    assert qemu["runs"] == 1
    assert len(qemu["taipan_samples"]) == len(qemu["trivial_samples"]) == 1
    assert qemu["taipan_s"] > 0 and qemu["trivial_s"] > 0
    assert qemu["ratio"] == pytest.approx(qemu["taipan_s"] / qemu["trivial_s"])


@pytest.mark.boot
def test_bench_json_reports_partition_exit_costs_and_compute_ratio(doc: dict) -> None:
    assert set(doc["partitions"]) == {"qemu"}  # --only qemu
    qemu = doc["partitions"]["qemu"]
    assert qemu["runs"] == 1
    for key in ("fast_exit_us", "upcall_exit_us", "bare_cpuid_us", "compute_taipan_s", "compute_bare_s"):
        assert qemu[key] > 0 and qemu["samples"][key] == [qemu[key]]
    assert qemu["upcall_ratio"] == pytest.approx(qemu["upcall_exit_us"] / qemu["fast_exit_us"])
    assert qemu["compute_ratio"] == pytest.approx(qemu["compute_taipan_s"] / qemu["compute_bare_s"])
    # Behaviour, not speed: every CPUID of the loop exited on both paths (the
    # guest adds its own few to find Taipan).
    assert qemu["fast_exits"] >= qemu["cpuid_count"] > 0
    assert qemu["upcall_exits"] >= qemu["upcall_count"] > 0
    # The floor ran beside the fast path in the one round: its figures exist, and
    # the ratio is the pair's, from TSC ticks per exit.
    for key in ("floor_exit_us", "fast_exit_cycles", "floor_exit_cycles", "floor_ratio"):
        assert qemu[key] > 0 and len(qemu["samples"][key]) == 1
    assert qemu["floor_ratio"] == pytest.approx(qemu["fast_exit_cycles"] / qemu["floor_exit_cycles"])
    assert qemu["floor_exits"] == qemu["cpuid_count"] + 1
    # One timer interrupt delivered per iteration, under Taipan and bare.
    for key in ("timer_irq_us", "bare_timer_us", "timer_ratio"):
        assert qemu[key] > 0 and len(qemu["samples"][key]) == 1
    assert qemu["timer_ratio"] == pytest.approx(qemu["timer_irq_us"] / qemu["fast_exit_us"])


FLOOR_VENDORS = [pytest.param("qemu", id="amd-qemu", marks=pytest.mark.boot),
                 pytest.param("bochs", id="intel-bochs", marks=pytest.mark.bochs)]


@pytest.mark.parametrize("emulator", FLOOR_VENDORS)
def test_floor_image_builds_runs_the_bench_guest_and_counts_every_cpuid_exit(emulator: str,
                                                                              tmp_path: Path) -> None:
    count = 2_000
    kernel = bench.floor_image(emulator, count, tmp_path)
    assert (ROOT / "build" / "bench" / f"floor-{count}.elf").is_file()
    line, exits = bench.run_floor(emulator, kernel, tmp_path / "run")
    assert (line.mode, line.count, line.source) == ("cpuid", count, "pit")
    # Every CPUID of the loop exited to the floor, plus the one with which the
    # guest looks for Taipan (and, under the floor, does not find it).
    assert exits == count + 1
    # Behaviour, not speed: an exit costs more than nothing, and less than a
    # whole second of the guest's time (a wrong TSC rate or a loop that never
    # exited would break one of the two).
    assert line.tsc_khz > 0 and 0 < line.seconds / count < 1.0


@pytest.mark.boot
@pytest.mark.parametrize(("cpu", "why"), [("qemu64,-svm", b"neither AMD-V nor VT-x"),
                                          ("qemu64,+svm,-npt", b"AMD-V without nested paging")])
def test_floor_on_a_cpu_it_cannot_use_says_why(tmp_path: Path, cpu: str, why: bytes) -> None:
    kernel = bench_floor.build(tmp_path / "floor.elf", count=10)
    # The floor says why in one line and halts (QEMU stays up).
    child = bench._spawn_qemu(kernel, tmp_path / "qemu.stderr", cpu=cpu)
    try:
        found = child.expect([bench_floor.FLOOR_ERROR, pexpect.TIMEOUT, pexpect.EOF], timeout=60)
        assert found == 0 and why in child.match.group(0), child.before[-500:]
        assert b"bench cpuid" not in child.before  # the guest never ran
    finally:
        bench._close(child)


def test_floor_refuses_a_loop_the_guest_cannot_run() -> None:
    with pytest.raises(ValueError, match="count must be an integer"):
        bench_floor.image(count=0)


def test_jitter_stats_measure_each_start_from_the_frame_grid() -> None:
    from toolchain import bench_smp

    khz = 1000  # 1 tick a microsecond
    frame = bench_smp.JITTER_FRAME_MS * 1000
    # Starts on the grid but for one 300 us late, one 50 us late, and one frame missed.
    starts = [0, frame, 2 * frame + 300, 3 * frame, 5 * frame + 50, 6 * frame]
    j = bench_smp.jitter_stats(starts, khz)
    assert j.frames == 6 and j.skipped_frames == 1
    assert j.max_us == 300 and j.p99_us == 300
    assert j.max_fraction == 300 / (bench_smp.JITTER_WINDOW_MS * 1000)


def test_the_cross_cpu_bench_configurations_are_valid(tmp_path) -> None:
    from toolchain import bench_smp, config

    texts = [*bench_smp.interference_configs("qemu"), bench_smp.jitter_config(),
             *bench_smp.upcall_configs("bochs").values()]
    for number, text in enumerate(texts):
        path = tmp_path / f"c{number}.toml"
        path.write_text(text)
        assert config.check(path) == 0, text
