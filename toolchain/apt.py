"""Debian's packages fetched with apt's own client under a private configuration, and the bytes of a download as they arrive."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from toolchain.progress import Step


class AptError(Exception):
    """apt-get failed; the message carries its command and what it printed."""

    def __init__(self, args: tuple[str, ...], stderr: str) -> None:
        super().__init__(f"apt-get {' '.join(args)} failed:\n{stderr}")
        self.stderr = stderr


def apt_get(workdir: Path, *args: str) -> None:
    """Run apt-get with its sources, lists and cache under workdir (its sources.list written by
    the caller): the system's apt state is never read or written."""
    workdir = workdir.resolve()
    for sub in ("lists/partial", "cache/archives/partial"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    cmd = ["apt-get", "-q",
           "-o", f"Dir::Etc::sourcelist={workdir / 'sources.list'}",
           "-o", "Dir::Etc::sourceparts=/dev/null",
           "-o", f"Dir::State::Lists={workdir / 'lists'}",
           "-o", f"Dir::Cache={workdir / 'cache'}",
           "-o", "APT::Sandbox::User=root", *args]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        raise AptError(args, result.stderr.strip())


def measure_download(workdir: Path, files: dict[str, int]) -> Callable[[Step], None]:
    """A step's poll: how much of `files` (name prefix -> size in bytes) has arrived, wherever
    apt keeps a file while it fetches it (partial/, then its final place)."""
    total = sum(files.values())

    def poll(step: Step) -> None:
        arrived = sum(min(_largest(workdir, prefix), size) for prefix, size in files.items())
        step.update(arrived / total, f"{arrived / 1e6:.1f} of {total / 1e6:.1f} MB")
    return poll


def _largest(workdir: Path, prefix: str) -> int:
    largest = 0
    for path in workdir.rglob(prefix + "*"):
        try:
            largest = max(largest, path.stat().st_size)
        except FileNotFoundError:  # apt moved it from partial/ while we looked
            pass
    return largest
