"""Fixtures that build the image once and boot it in QEMU or Bochs with a pexpect console."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import termios
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


ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
_images: dict[tuple[str, bool], Path] = {}


def config_path(name: str) -> Path:
    """configs/tests/NAME.toml, configs/NAME.toml for the examples there (demo, smp, cyclic),
    or examples/X/system.toml for NAME "examples/X"."""
    if name.startswith("examples/"):
        return CONFIGS.parent / name / "system.toml"
    example = CONFIGS / f"{name}.toml"
    return example if example.exists() else CONFIGS / "tests" / f"{name}.toml"


def config_image(name: str, dev: bool = False) -> Path:
    """build/cfg-NAME.elf for config_path(NAME), built once; with `dev`, cfg-NAME-dev.elf built with --dev."""
    if (name, dev) not in _images:
        _images[name, dev] = build.build(quiet=True, config_path=config_path(name), test_hooks=True, dev=dev,
                                         image=f"cfg-{name.replace('/', '-')}" + ("-dev" if dev else ""))
    return _images[name, dev]


def config_cpus(name: str) -> int:
    """The CPU count a configuration plans for: the emulator gets that many."""
    return config.load(config_path(name), test_hooks=True).platform.cpus


# The two vendors of every guest-facing test: AMD-V and NPT under QEMU TCG, VT-x and EPT under Bochs.
VENDORS = [pytest.param("amd", id="amd-qemu"), pytest.param("intel", id="intel-bochs", marks=pytest.mark.bochs)]
# The same with the Bochs run in the slow mark (`make test ARGS="-m slow"` runs it): for a check
# whose VT-x part another Bochs test of the default run covers, or that takes Bochs minutes, so
# the default suite stays under 30 minutes.
VENDORS_BOCHS_SLOW = [pytest.param("amd", id="amd-qemu"),
                      pytest.param("intel", id="intel-bochs", marks=[pytest.mark.bochs, pytest.mark.slow])]

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
        # A terminal's Enter key sends CR; the shell takes LF and CR LF as Enter too.
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


ENTER_FORMS = {"cr": "\r", "lf": "\n", "crlf": "\r\n"}


def check_enter_forms(console: Console, timeout: float = 60) -> None:
    """CR, LF and CR LF each end exactly one line: one unknown command typed with each, an empty
    line with each, then a last command. Every line gets one answer and one prompt, and no
    line end is taken twice (an extra empty line would show as an extra prompt). The empty
    lines end LF, CR, CR LF: a CR then an LF would be one CR LF."""
    lines = [f"enter{name}" for name in ENTER_FORMS] + [""] * len(ENTER_FORMS)
    ends = list(ENTER_FORMS.values()) + [ENTER_FORMS[name] for name in ("lf", "cr", "crlf")]
    console.type("".join(line + end for line, end in zip(lines, ends, strict=True)) + "enterlast\r")
    console.expect(re.escape("error: unknown command 'enterlast'"), timeout=timeout)
    seen = console.child.before.replace("\r", "")
    console.wait_prompt(timeout)
    for name in ENTER_FORMS:
        assert seen.count(f"error: unknown command 'enter{name}'") == 1, seen
    assert seen.count(PROMPT) == len(lines), seen


def ps_json(console: Console, timeout: float = 60) -> dict[str, dict]:
    """`ps --json` by partition name; announcements of partitions that ended may come before it."""
    out = console.command("ps --json", timeout=timeout)
    doc = json.loads(out[out.index("{"):out.rindex("}") + 1])
    return {p["name"]: p for p in doc["partitions"]}


def logged_counts(console: Console, name: str, word: str = "hello from", lines: int = 3) -> list[int]:
    """N of each `WORD NAME N` among the partition's last complete log lines. The log shows
    the line the guest is still writing too ("hello from hello 1" of what becomes 123), so
    the last line is asked for and left out."""
    deadline = time.monotonic() + 60
    while True:  # until one line is complete: a guest that just began has only the one
        complete = console.command(f"log {name} -n {lines + 1}").splitlines()[:-1]
        found = [int(n) for n in re.findall(rf"{word} {name} (\d+)", "\n".join(complete))]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


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

    def boot(vendor: str, name: str, cpus: int | None = None, memory_mb: int = 256,
             tcg_single_thread: bool = False, instruction_clock: bool = False) -> Console:
        """cpus: the emulator's CPU count, by default what the configuration plans;
        tcg_single_thread, instruction_clock: QEMU's (emulator.qemu_argv); Bochs
        runs in one thread and counts instructions anyway."""
        elf = config_image(name)
        cpus = cpus or config_cpus(name)
        if vendor == "amd":
            child = _qemu(elf, cpu="EPYC", memory_mb=memory_mb, smp=cpus, no_reboot=True,
                          tcg_single_thread=tcg_single_thread, instruction_clock=instruction_clock)
            stack.append(child.terminate)
            return Console(child).boot()
        missing = emulator.bochs_missing()
        if missing:
            pytest.fail(missing)
        workdir = tmp_path / f"bochs-{name.replace('/', '-')}"
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


# --- the host tools (taipan ctl, console, fleet) as a user runs them

HOST_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TAIPAN = [sys.executable, "-m", "toolchain.cli"]


def taipan(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`taipan ARGS...` in a process of its own: its status, stdout and stderr."""
    return subprocess.run(TAIPAN + list(args), capture_output=True, text=True, env=HOST_ENV, cwd=ROOT,
                          timeout=timeout, check=False)


def closed_port() -> int:
    """A loopback TCP port nobody listens on (bound, never listened, closed), free to hand out."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def wait_raw(child: pexpect.spawn) -> None:
    """Until the pty is raw: `taipan console` prints its first note just before it turns so."""
    deadline = time.monotonic() + 10
    while termios.tcgetattr(child.child_fd)[3] & termios.ICANON:
        assert time.monotonic() < deadline, "the terminal never turned raw"
        time.sleep(0.05)
