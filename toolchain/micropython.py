"""MicroPython's source: fetched from Debian's source package, checked by sha256, unpacked, mpy-cross built."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from toolchain.apt import AptError, apt_get, measure_download
from toolchain.progress import Progress

PACKAGE = "micropython"
VERSION = "1.25.0+ds-1"
ORIG_TARBALL = "micropython_1.25.0+ds.orig.tar.xz"
ORIG_SHA256 = "7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea"
ORIG_BYTES = 5_983_992
TREE_NAME = "micropython-1.25.0"
# trixie carries the pinned version; only its source index is consulted.
SOURCES_LINE = "deb-src http://deb.debian.org/debian trixie main\n"


class SourceError(Exception):
    """The MicroPython source could not be fetched or did not check out."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_tarball(path: Path, expected: str = ORIG_SHA256) -> None:
    """Refuse a tarball whose sha256 is not the pinned one."""
    actual = sha256_of(path)
    if actual != expected:
        raise SourceError(
            f"{path.name}: sha256 {actual} does not match the pinned {expected}; "
            "refusing to build from it (delete it to download again)"
        )


def download(workdir: Path, progress: Progress | None = None) -> Path:
    """Fetch the pinned source package with apt's own client; return the checked tarball."""
    tarball = workdir / ORIG_TARBALL
    if tarball.exists():
        check_tarball(tarball)
        return tarball
    (workdir / "sources.list").write_text(SOURCES_LINE)
    progress = progress or Progress(quiet=True)
    try:
        with progress.step("MicroPython source: Debian's source index (apt-get update)"):
            apt_get(workdir, "update")
        with progress.step(f"MicroPython source: downloading {ORIG_TARBALL}") as step:
            step.poll = measure_download(workdir, {ORIG_TARBALL: ORIG_BYTES})
            apt_get(workdir, "source", "--download-only", f"{PACKAGE}={VERSION}")
            step.poll(step)
    except AptError as error:
        raise SourceError(str(error)) from None
    if not tarball.exists():
        raise SourceError(f"apt-get source did not produce {ORIG_TARBALL} in {workdir}")
    check_tarball(tarball)
    return tarball


def unpack(tarball: Path, dest: Path) -> Path:
    tree = dest / TREE_NAME
    if (tree / "py" / "mpconfig.h").exists():
        return tree
    staging = dest / (TREE_NAME + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(staging, filter="data")
    shutil.rmtree(tree, ignore_errors=True)
    (staging / TREE_NAME).rename(tree)
    staging.rmdir()
    return tree


def source_tree(build_dir: Path, progress: Progress | None = None) -> Path:
    """The MicroPython tree to build from: $TAIPAN_MICROPYTHON_SRC, or the pinned Debian source."""
    override = os.environ.get("TAIPAN_MICROPYTHON_SRC")
    if override:
        tree = Path(override).resolve()
        if not (tree / "py" / "mpconfig.h").exists():
            raise SourceError(f"TAIPAN_MICROPYTHON_SRC={override} is not a MicroPython tree (no py/mpconfig.h)")
        return tree
    progress = progress or Progress(quiet=True)
    workdir = build_dir / "micropython-src"
    workdir.mkdir(parents=True, exist_ok=True)
    tarball = download(workdir, progress)
    if (workdir / TREE_NAME / "py" / "mpconfig.h").exists():
        return workdir / TREE_NAME
    with progress.step(f"MicroPython source: unpacking {ORIG_TARBALL}"):
        return unpack(tarball, workdir)


def mpy_cross(tree: Path, jobs: int, progress: Progress | None = None) -> Path:
    """Build the host's mpy-cross, which compiles hv/py to frozen bytecode."""
    exe = tree / "mpy-cross" / "build" / "mpy-cross"
    if not exe.exists():
        with (progress or Progress(quiet=True)).step("mpy-cross (MicroPython's compiler, for this host)"):
            result = subprocess.run(
                ["make", "-C", str(tree / "mpy-cross"), f"-j{jobs}"], capture_output=True, text=True
            )
        if result.returncode != 0:
            raise SourceError(f"building mpy-cross failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return exe
