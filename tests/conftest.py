"""Fixtures that build the image once and boot it in QEMU or Bochs with a pexpect console."""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pexpect.fdpexpect
import pytest

from toolchain import build, config, emulator, iso

PROMPT = "taipan> "
BOOT_TIMEOUT = 120  # generous: Bochs boots through BIOS and GRUB first
REPL_PROMPT = ">>> "
BOCHS_CHAR_DELAY = 0.02


@pytest.fixture(scope="session")
def taipan_elf() -> Path:
    return build.build(quiet=True)


@pytest.fixture(scope="session")
def taipan_iso(taipan_elf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return iso.make_iso(taipan_elf, tmp_path_factory.mktemp("iso") / "taipan.iso")


CONFIGS = Path(__file__).resolve().parent.parent / "configs"
_images: dict[str, Path] = {}


def config_path(name: str) -> Path:
    """configs/tests/NAME.toml, or configs/NAME.toml for the examples there (demo, smp, cyclic)."""
    example = CONFIGS / f"{name}.toml"
    return example if example.exists() else CONFIGS / "tests" / f"{name}.toml"


def config_image(name: str) -> Path:
    """build/cfg-NAME.elf for config_path(NAME), built once."""
    if name not in _images:
        _images[name] = build.build(quiet=True, config_path=config_path(name), image=f"cfg-{name}")
    return _images[name]


def config_cpus(name: str) -> int:
    """The CPU count a configuration plans for: the emulator gets that many."""
    return config.load(config_path(name)).platform.cpus


class Console:
    """The serial console of a booted Taipan, as a person at a terminal sees it."""

    def __init__(self, child: pexpect.spawnbase.SpawnBase, char_delay: float = 0.0) -> None:
        self.child = child
        self.banner = ""
        # Bochs feeds the serial port faster than its UART's FIFO drains while a
        # guest runs: type there at a person's pace rather than in one burst.
        self.char_delay = char_delay

    def wait_prompt(self, timeout: float = 60) -> str:
        """Wait for the shell prompt; return what came before it, line ends as '\\n'."""
        self.child.expect_exact(PROMPT, timeout=timeout)
        return self.child.before.replace("\r", "")

    def boot(self) -> Console:
        self.banner = self.wait_prompt(BOOT_TIMEOUT)
        return self

    def type(self, text: str) -> None:
        # A terminal's Enter key sends CR, which is what MicroPython's readline takes.
        if not self.char_delay:
            self.child.send(text)
            return
        for char in text:
            self.child.send(char)
            time.sleep(self.char_delay)

    def command(self, line: str, timeout: float = 60, prompt: str = PROMPT) -> str:
        """Type a line, wait for the next prompt, return what was printed in between (no echo)."""
        self.type(line + "\r")
        self.child.expect_exact(prompt, timeout=timeout)
        out = self.child.before.replace("\r", "")
        return out.split("\n", 1)[1] if "\n" in out else ""

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        self.child.expect(pattern, timeout=timeout)
        return self.child.match


def ps_json(console: Console, timeout: float = 60) -> dict[str, dict]:
    """`ps --json` by partition name; announcements of partitions that ended may come before it."""
    out = console.command("ps --json", timeout=timeout)
    doc = json.loads(out[out.index("{"):out.rindex("}") + 1])
    return {p["name"]: p for p in doc["partitions"]}


def wait_ps(console: Console, predicate, patience: float, what: str) -> dict[str, dict]:
    """Ask `ps --json` again until predicate(partitions by name) holds; guests run between asks."""
    deadline = time.monotonic() + patience
    while True:
        parts = ps_json(console)
        if predicate(parts):
            return parts
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {json.dumps(parts)}"
        time.sleep(0.5)


def _qemu(elf: Path, **options: object) -> pexpect.spawn:
    argv = emulator.qemu_argv(elf, serial="stdio", **options)
    return pexpect.spawn(argv[0], argv[1:], encoding="utf-8", codec_errors="replace", timeout=60)


@pytest.fixture
def qemu_boot(taipan_elf: Path) -> Iterator:
    """Boot Taipan under QEMU TCG with the given emulator options; returns a Console at the prompt."""
    children: list[pexpect.spawn] = []

    def boot(**options: object) -> Console:
        options.setdefault("memory_mb", 256)
        options.setdefault("smp", config_cpus("demo"))
        child = _qemu(taipan_elf, **options)
        children.append(child)
        return Console(child).boot()

    yield boot
    for child in children:
        child.terminate(force=True)


@pytest.fixture
def boot_config(request, tmp_path: Path) -> Iterator:
    """boot_config(vendor, config) -> Console: a system description booted on "amd" (QEMU
    TCG, -cpu EPYC: AMD-V+NPT) or "intel" (Bochs from a GRUB ISO: VT-x+EPT)."""
    stack: list = []

    def boot(vendor: str, name: str, cpus: int | None = None, memory_mb: int = 256) -> Console:
        """cpus: the emulator's CPU count, by default what the configuration plans."""
        elf = config_image(name)
        cpus = cpus or config_cpus(name)
        if vendor == "amd":
            child = _qemu(elf, cpu="EPYC", memory_mb=memory_mb, smp=cpus, no_reboot=True)
            stack.append(child.terminate)
            return Console(child).boot()
        missing = emulator.bochs_missing()
        if missing:
            pytest.fail(missing)
        workdir = tmp_path / f"bochs-{name}"
        workdir.mkdir()
        image = iso.make_iso(elf, workdir / "taipan.iso")
        run = emulator.BochsRun(image, workdir, cpu_model="corei7_skylake_x", memory_mb=memory_mb,
                                cpus=cpus).__enter__()
        stack.append(run.close)
        child = pexpect.fdpexpect.fdspawn(run.fileno(), encoding="utf-8", codec_errors="replace", timeout=60)
        return Console(child, char_delay=BOCHS_CHAR_DELAY).boot()

    yield boot
    for close in reversed(stack):
        close()


@pytest.fixture
def qemu(qemu_boot) -> Console:
    """Taipan on QEMU TCG with -cpu EPYC: the AMD-V + NPT machine."""
    return qemu_boot(cpu="EPYC", no_reboot=True)


@pytest.fixture
def bochs(taipan_iso: Path, tmp_path: Path) -> Iterator[Console]:
    """Taipan booted by GRUB from the ISO under Bochs with a VT-x + EPT CPU."""
    missing = emulator.bochs_missing()
    if missing:
        pytest.fail(missing)  # bootstrap installs Bochs: its absence is a broken set-up, not a skip
    with emulator.BochsRun(taipan_iso, tmp_path, cpu_model="corei7_skylake_x", memory_mb=256,
                           cpus=config_cpus("demo")) as run:
        child = pexpect.fdpexpect.fdspawn(run.fileno(), encoding="utf-8", codec_errors="replace", timeout=60)
        yield Console(child, char_delay=BOCHS_CHAR_DELAY).boot()
