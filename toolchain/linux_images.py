"""`taipan images linux`: Debian 12's kernel and busybox-static fetched with apt, checked by sha256, and an initramfs built in Python."""
from __future__ import annotations

import argparse
import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

from toolchain.apt import AptError, apt_get, measure_download
from toolchain.micropython import sha256_of
from toolchain.progress import Progress

ROOT = Path(__file__).resolve().parent.parent
# The pinned packages: Debian 12's point-release archive carries these; the
# security archive moves on faster, and the metapackage follows it.
KERNEL_ABI = "6.1.0-50-amd64"
KERNEL_PACKAGE = f"linux-image-{KERNEL_ABI}"
KERNEL_VERSION = "6.1.176-1"
KERNEL_SHA256 = "7b5597492a0a65aee61985a492e6bcc3f2cde830072a0e3b3d8c7e1b90279bd3"
KERNEL_BYTES = 70_305_560
BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX_VERSION = "1:1.35.0-4+deb12u1+b1"
BUSYBOX_SHA256 = "3d3fdbe91d4660c873e14b092c213fe81c1da6362daa236eb25d0171eb108744"
BUSYBOX_BYTES = 928_188
SOURCES = ("deb http://deb.debian.org/debian bookworm main\n"
           "deb http://deb.debian.org/debian-security bookworm-security main\n")
# Points at a kernel (bzImage or PVH vmlinux) the user already has, instead of the download.
KERNEL_ENV = "TAIPAN_LINUX_KERNEL"
BUSYBOX_ENV = "TAIPAN_BUSYBOX"

INIT_SCRIPT = """#!/bin/sh
# /init of Taipan's initramfs: the kernel runs this as PID 1.
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
echo "taipan initramfs: $(uname -r)"
# A shell with a controlling terminal, so Ctrl-C reaches what it runs.
exec setsid cttyhack sh
"""


class ImageError(Exception):
    """A package could not be fetched, or did not check out."""


def _apt(workdir: Path, *args: str) -> None:
    try:
        apt_get(workdir, *args)
    except AptError as error:
        gone = any(sign in error.stderr for sign in ("Version '", "Unable to locate", "Can't select"))
        hint = (f"\nthe pinned version is gone from Debian's archive; set {KERNEL_ENV}=PATH to "
                f"a kernel you have (a bzImage or PVH vmlinux) and {BUSYBOX_ENV}=PATH to a static "
                "busybox, or update the pins in toolchain/linux_images.py") if gone else ""
        raise ImageError(f"{error}{hint}") from None


def _deb_name(package: str, version: str) -> str:
    return f"{package}_{version.replace(':', '%3a')}_amd64.deb"


def fetch(workdir: Path, progress: Progress | None = None) -> dict[str, Path]:
    """Download both pinned .debs with apt's own client; return them, their sha256 checked."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    debs = {KERNEL_PACKAGE: (KERNEL_VERSION, KERNEL_SHA256, KERNEL_BYTES),
            BUSYBOX_PACKAGE: (BUSYBOX_VERSION, BUSYBOX_SHA256, BUSYBOX_BYTES)}
    paths = {name: workdir / _deb_name(name, version) for name, (version, _, _) in debs.items()}
    missing = {name: pin for name, pin in debs.items() if not paths[name].exists()}
    if missing:
        progress = progress or Progress(quiet=True)
        (workdir / "sources.list").write_text(SOURCES)
        with progress.step("Linux images: Debian's package index (apt-get update)"):
            _apt(workdir, "update")
        with progress.step(f"Linux images: downloading {', '.join(missing)}") as step:
            step.poll = measure_download(workdir, {paths[name].name: size for name, (_, _, size) in missing.items()})
            _apt(workdir, "download", *(f"{name}={version}" for name, (version, _, _) in missing.items()))
            step.poll(step)
    for name, (_, expected, _) in debs.items():
        actual = sha256_of(paths[name])
        if actual != expected:
            raise ImageError(f"{paths[name].name}: sha256 {actual} is not the pinned {expected}; "
                             "refusing it (delete it to download again)")
    return paths


def deb_member(deb: Path, wanted: str) -> bytes:
    """One file of a .deb (an ar archive holding data.tar.*), read with Python alone."""
    blob = deb.read_bytes()
    if blob[:8] != b"!<arch>\n":
        raise ImageError(f"{deb.name}: not a Debian package (no ar header)")
    at = 8
    while at + 60 <= len(blob):
        name = blob[at:at + 16].decode().strip().rstrip("/")
        size = int(blob[at + 48:at + 58].decode().strip())
        body = blob[at + 60:at + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for member in tar.getmembers():
                    if member.name.lstrip("./") == wanted.lstrip("/") and member.isfile():
                        extracted = tar.extractfile(member)
                        assert extracted is not None
                        return extracted.read()
            raise ImageError(f"{deb.name}: no {wanted} inside")
        at += 60 + size + (size & 1)
    raise ImageError(f"{deb.name}: no data.tar member")


def _newc(name: str, mode: int, data: bytes = b"", ino: int = 0, rdev: tuple[int, int] = (0, 0)
          ) -> bytes:
    """One entry of a newc ("070701") cpio archive, padded to 4 bytes."""
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
    header = b"070701" + b"".join(f"{value:08x}".encode() for value in fields)
    out = header + encoded
    out += bytes(-len(out) % 4) + data
    return out + bytes(-len(out) % 4)


def initramfs(busybox: bytes, init: str = INIT_SCRIPT) -> bytes:
    """A gzipped newc cpio: busybox, /init, the mount points and a console node."""
    entries = [("bin", stat.S_IFDIR | 0o755, b""), ("dev", stat.S_IFDIR | 0o755, b""),
               ("proc", stat.S_IFDIR | 0o755, b""), ("sys", stat.S_IFDIR | 0o755, b""),
               ("tmp", stat.S_IFDIR | 0o1777, b""),
               ("bin/busybox", stat.S_IFREG | 0o755, busybox),
               ("bin/sh", stat.S_IFLNK | 0o777, b"busybox"),
               ("init", stat.S_IFREG | 0o755, init.encode())]
    archive = b"".join(_newc(name, mode, data, ino=number + 1)
                       for number, (name, mode, data) in enumerate(entries))
    # The console node lets the kernel open /dev/console before devtmpfs is mounted.
    archive += _newc("dev/console", stat.S_IFCHR | 0o600, ino=len(entries) + 1, rdev=(5, 1))
    archive += _newc("TRAILER!!!", 0)
    return gzip.compress(archive, mtime=0)


def build(build_dir: Path, progress: Progress | None = None) -> dict[str, Path]:
    """build/images/linux/{vmlinuz, initramfs.cpio.gz}: from the environment's files or Debian's."""
    out = build_dir / "images" / "linux"
    out.mkdir(parents=True, exist_ok=True)
    kernel_env, busybox_env = os.environ.get(KERNEL_ENV), os.environ.get(BUSYBOX_ENV)
    debs = {} if kernel_env and busybox_env else fetch(build_dir / "linux-debs", progress)
    kernel = (Path(kernel_env).read_bytes() if kernel_env
              else deb_member(debs[KERNEL_PACKAGE], f"boot/vmlinuz-{KERNEL_ABI}"))
    busybox = (Path(busybox_env).read_bytes() if busybox_env
               else deb_member(debs[BUSYBOX_PACKAGE], "bin/busybox"))
    paths = {"kernel": out / "vmlinuz", "initrd": out / "initramfs.cpio.gz"}
    with (progress or Progress(quiet=True)).step("Linux images: the kernel and a busybox initramfs"):
        for key, data in (("kernel", kernel), ("initrd", initramfs(busybox))):
            if not paths[key].exists() or paths[key].read_bytes() != data:
                paths[key].write_bytes(data)
    return paths


def cmd_images(args: argparse.Namespace) -> int:
    try:
        paths = build(ROOT / "build", Progress())
    except (ImageError, OSError) as error:
        print(f"taipan images linux: {error}")
        return 1
    for key, path in paths.items():
        print(f"{key}: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
              f"({path.stat().st_size:,} bytes)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("images", help="fetch or build guest images under build/images/")
    p.add_argument("which", choices=["linux"], help="linux: Debian 12's kernel "
                   f"({KERNEL_PACKAGE} {KERNEL_VERSION}) and a busybox initramfs; "
                   f"${KERNEL_ENV} and ${BUSYBOX_ENV} point at files of your own instead")
    p.set_defaults(func=cmd_images)

