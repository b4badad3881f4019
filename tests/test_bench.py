"""scripts/bench end to end under QEMU: its JSON has every field and plausible (positive) figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    # guest adds its own few to find Taipan), and the upcall path took no fewer.
    assert qemu["fast_exits"] >= qemu["cpuid_count"] > 0
    assert qemu["upcall_exits"] >= qemu["fast_exits"]
