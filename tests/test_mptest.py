"""Tests of `taipan mptest`: the exclusion file, run-tests' summary parser, and the CI subset booted on QEMU."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from toolchain import micropython, mptest

ROOT = mptest.ROOT


def _tree() -> Path:
    # The tree the build uses (fetched and checked on first use).
    return micropython.source_tree(ROOT / "build")


def test_exclusions_parse_with_reasons_and_name_real_tests() -> None:
    tree = _tree()
    excluded = mptest.load_excluded()
    assert excluded, "the exclusion file should parse to at least one entry"
    for test, reason in excluded.items():
        assert (tree / "tests" / test).is_file(), f"{test} is not a test in {tree / 'tests'}"
        assert len(reason.split()) >= 3, f"{test}: reason {reason!r} says too little"
        # Each entry is within the folders mptest runs, or it excludes nothing.
        assert test.split("/")[0] in mptest.DEFAULT_DIRS, test
    # Every non-comment line is `path # reason`: nothing silently ignored.
    for line in mptest.EXCLUDED_FILE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert re.match(r"^\S+\.py\s+#\s*\S", line), line


def test_exclusion_file_rejects_a_line_without_reason(tmp_path: Path) -> None:
    bad = tmp_path / "excluded.txt"
    bad.write_text("basics/int1.py\n")
    with pytest.raises(mptest.ExclusionError):
        mptest.load_excluded(bad)


def test_exclude_regex_drops_exactly_one_test() -> None:
    pattern = re.compile(mptest.exclude_regex("float/math_constants.py"))
    assert pattern.search("float/math_constants.py")
    assert not pattern.search("float/math_constants_extra.py")
    assert not pattern.search("float/mathxconstants.py")


def test_parse_summary() -> None:
    out = (
        "pass  basics/a.py \nFAIL  basics/b.py \n"
        "3 tests performed (40 individual testcases)\n"
        "1 tests passed\n"
        "1 tests skipped: c\n"
        "1 tests failed: b\n"
    )
    s = mptest.parse_summary(out)
    assert (s.performed, s.testcases, s.passed, s.skipped, s.failed) == (3, 40, 1, 1, 1)
    assert s.failed_tests == ["b"] and s.skipped_tests == ["c"] and s.complete
    assert s.pass_rate == 0.5
    aborted = mptest.parse_summary("error: test basics/x.py requires unittest\n")
    assert not aborted.complete


def test_subsets_name_real_folders() -> None:
    tree = _tree()
    assert "ci" in mptest.SUBSETS
    for dirs in mptest.SUBSETS.values():
        for d in dirs:
            assert (tree / "tests" / d).is_dir(), d


@pytest.mark.boot
@pytest.mark.mptest
def test_ci_subset_passes_on_qemu(tmp_path: Path, taipan_elf: Path) -> None:
    elf = taipan_elf
    summary_path = tmp_path / "summary.json"
    # Two QEMU instances, one a core: the shards' summaries merge into one.
    status = mptest.run(elf, subset="ci", jobs=2, summary_path=summary_path)
    summary = json.loads(summary_path.read_text())
    assert summary["shards"] == 2 and len(summary["run_tests_status"]) == 2
    assert summary["complete"], "run-tests aborted before its summary"
    assert summary["performed"] > 0
    ran = summary["passed"] + summary["failed"]
    assert summary["passed"] / ran >= mptest.THRESHOLD, summary["failed_tests"]
    assert status == 0
