"""The Python of the toolchain, generators, tests and frozen MicroPython code stays ruff-clean under pyproject.toml's rules."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing() -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a dependency in pyproject.toml: scripts/bootstrap installs it into .venv"
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
