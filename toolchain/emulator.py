"""Emulator command lines and runs: QEMU argv, Bochs configuration, and a Bochs console driver."""

from __future__ import annotations

import datetime
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
import tty
from collections.abc import Sequence
from pathlib import Path
from typing import Self

# QEMU's isa-debug-exit: a guest's write of N to port 0xf4 ends QEMU with
# status N*2+1, which is how test kernels report a result.
DEBUG_EXIT = "isa-debug-exit,iobase=0xf4,iosize=0x04"

BOCHS_BIOS = "/usr/share/bochs/BIOS-bochs-latest"

# Debian's OVMF (package ovmf): the firmware code is read-only and shared; the
# variables (boot order, Secure Boot keys) are a per-machine flash that UEFI
# writes, so each run gets a copy of the template in build/. These two are the
# pair without Secure Boot enrolled (docs/boot.md says what changes with it).
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
FIRMWARES = ("bios", "uefi")
VGA_BIOS = "/usr/share/vgabios/vgabios.bin"
# Debian's Bochs 2.7 refuses `memory: host=` above this (its host_size range).
BOCHS_HOST_MAX_MB = 2048


# On stdio the console is the person's terminal: Ctrl-C must reach Taipan, not
# kill QEMU (signal=off), and QEMU's own escape moves from Ctrl-A, which the
# shell and the raw REPL use, to Ctrl-T (Ctrl-T x quits, Ctrl-T c the monitor).
STDIO_ESCAPE = "0x14"
STDIO_HINT = "taipan: the console is this terminal; Ctrl-T x quits QEMU, Ctrl-T h lists the keys"


def _serial_args(serial: str) -> list[str]:
    if serial == "stdio":
        return ["-chardev", "stdio,id=console,mux=on,signal=off", "-serial", "chardev:console",
                "-mon", "chardev=console,mode=readline", "-echr", STDIO_ESCAPE]
    if serial in ("pty", "none"):
        return ["-serial", serial, "-monitor", "none"]
    if serial.startswith("unix:"):
        # server + no wait: QEMU starts at once and a test connects when ready.
        return ["-serial", f"{serial},server=on,wait=off", "-monitor", "none"]
    raise ValueError(f"serial must be stdio, pty, none or unix:PATH, not {serial!r}")


def ovmf_missing() -> str | None:
    """Why QEMU cannot boot UEFI here (names the Debian package), or None."""
    for path in (OVMF_CODE, OVMF_VARS):
        if not path.is_file():
            return f"{path} not found: install the Debian package ovmf"
    return None


def ovmf_vars(workdir: Path) -> Path:
    """The writable UEFI variables file in `workdir`, copied from OVMF's template once."""
    copy = workdir / "OVMF_VARS.fd"
    if not copy.is_file() or copy.stat().st_size != OVMF_VARS.stat().st_size:
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(OVMF_VARS, copy)
    return copy


def rtc_base_datetime(rtc_base: str) -> datetime.datetime | None:
    """The date and time an RTC base names (None for "utc" and "localtime": the host's clock).

    The form is QEMU's: `utc`, `localtime`, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`.
    """
    if rtc_base in ("utc", "localtime"):
        return None
    for form in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.datetime.strptime(rtc_base, form)
        except ValueError:
            continue
    raise ValueError(f"rtc base must be utc, localtime, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS, not {rtc_base!r}")


def qemu_argv(kernel: Path, *, cpu: str = "EPYC", memory_mb: int = 128, smp: int = 1,
              serial: str = "stdio", accel: str = "tcg", append: str | None = None,
              no_reboot: bool = False, rtc_base: str | None = None,
              extra: Sequence[str] = (), cdrom: Path | None = None, firmware: str = "bios",
              vars_file: Path | None = None, tcg_single_thread: bool = False,
              instruction_clock: bool = False) -> list[str]:
    """The qemu-system-x86_64 command line that boots `kernel` through multiboot1 (-kernel).

    With `cdrom` QEMU boots that ISO instead (GRUB, multiboot2), by BIOS or,
    with `firmware="uefi"`, by OVMF with `vars_file` as its writable variables.
    TCG with `-cpu EPYC` emulates SVM + NPT; `accel="kvm"` passes the host CPU
    through (`-cpu host`), useful only where the host offers nested VMX/SVM.
    Without `no_reboot` a guest's reboot restarts the machine, as the console's
    `reboot` command expects. `rtc_base` starts the CMOS clock at a given UTC
    time (see rtc_base_datetime) instead of the host's. `tcg_single_thread` runs
    every CPU in one host thread (QEMU's round-robin TCG) instead of one thread
    each: the host triple fault docs/security.md records is seen only with one
    thread each. `instruction_clock` makes the guest's clocks count TCG's
    instructions (4 ns each, QEMU's -icount) and skip idle time, as Bochs's
    do: then the host's load cannot stretch a time window the guest measures.
    """
    if accel not in ("tcg", "kvm"):
        raise ValueError(f"accel must be tcg or kvm, not {accel!r}")
    if firmware not in FIRMWARES:
        raise ValueError(f"firmware must be bios or uefi, not {firmware!r}")
    if (tcg_single_thread or instruction_clock) and accel != "tcg":
        raise ValueError("tcg_single_thread and instruction_clock are TCG options")
    argv = ["qemu-system-x86_64", "-accel", "tcg,thread=single" if tcg_single_thread else accel,
            "-cpu", "host" if accel == "kvm" else cpu,
            "-m", str(memory_mb), "-smp", str(smp)]
    if firmware == "uefi":
        if cdrom is None or vars_file is None:
            raise ValueError("firmware uefi boots an ISO: give cdrom and vars_file")
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,file={vars_file}"]
    if cdrom is not None:
        argv += ["-cdrom", str(cdrom), "-boot", "d"]
    else:
        argv += ["-kernel", str(kernel)]
    if append is not None:
        argv += ["-append", append]
    if instruction_clock:
        argv += ["-icount", "shift=2,sleep=off"]
    if rtc_base is not None:
        rtc_base_datetime(rtc_base)  # refuse a malformed base here, by name, not in QEMU's words
        argv += ["-rtc", f"base={rtc_base}"]
    argv += _serial_args(serial)
    argv += ["-display", "none", "-device", DEBUG_EXIT]
    if no_reboot:
        argv.append("-no-reboot")
    return argv + list(extra)


def _cpu_flags(cpuinfo: Path) -> set[str]:
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def kvm_nested_available(root: Path = Path("/")) -> tuple[bool, str]:
    """Whether `-accel kvm` can run Taipan (the host's KVM must expose VMX or SVM), and why."""
    kvm = root / "dev/kvm"
    if not kvm.exists():
        return False, "/dev/kvm does not exist"
    if not os.access(kvm, os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    flags = _cpu_flags(root / "proc/cpuinfo")
    vendor = "intel" if "vmx" in flags else "amd" if "svm" in flags else None
    if vendor is None:
        # A paravirtual KVM (itself a guest without nested virtualization)
        # runs plain kernels but refuses VMXON/EFER.SVME.
        return False, "host CPU has neither vmx nor svm in /proc/cpuinfo: no nested virtualization"
    nested = root / f"sys/module/kvm_{vendor}/parameters/nested"
    if not nested.exists():
        return False, f"{nested} missing: kvm_{vendor} is not loaded"
    if nested.read_text().strip() not in ("Y", "1"):
        return False, f"kvm_{vendor} has nested virtualization off ({nested})"
    return True, f"kvm_{vendor} with nested={'VMX' if vendor == 'intel' else 'SVM'} available"


def bochs_time0(rtc_base: str) -> str:
    """Bochs's `clock: time0=` for an RTC base in QEMU's form (see rtc_base_datetime).

    Bochs sets its CMOS clock to localtime(time0) in its own time zone, which is
    this process's: so the seconds are those at which local time reads the base.
    """
    when = rtc_base_datetime(rtc_base)
    if when is None:
        return "utc" if rtc_base == "utc" else "local"
    return str(int(time.mktime(when.timetuple())))


def bochs_files(iso: Path, workdir: Path, *, cpu_model: str = "corei7_skylake_x",
                memory_mb: int = 128, cpus: int = 1, serial_file: Path | None = None,
                serial_tty: str | None = None, rtc_base: str | None = None) -> tuple[Path, Path]:
    """Write a bochsrc booting `iso` and the debugger command file; return (bochsrc, cmds).

    COM1 goes to `serial_tty` (mode=term: input and output, through a pty the
    caller owns) if given, else to `serial_file` (mode=file: output only,
    default workdir/serial.txt). `rtc_base` starts the CMOS clock at a given
    time, as for qemu_argv; by default it starts at the host's local time.
    """
    clock = "sync=none" if rtc_base is None else f"sync=none, time0={bochs_time0(rtc_base)}"
    workdir.mkdir(parents=True, exist_ok=True)
    if serial_tty is not None:
        com1 = f"mode=term, dev={serial_tty}"
    else:
        com1 = f"mode=file, dev={serial_file or workdir / 'serial.txt'}"
    rc = workdir / "bochsrc"
    # Bochs allocates at most BOCHS_HOST_MAX_MB of host memory for guest RAM;
    # above that the guest sees more RAM than is backed, and Bochs panics when
    # the guest has touched more than the backed amount (docs/boot.md).
    if memory_mb > BOCHS_HOST_MAX_MB:
        memory = f"memory: guest={memory_mb}, host={BOCHS_HOST_MAX_MB}"
    else:
        memory = f"megs: {memory_mb}"
    # display term needs Debian's bochs-term (Debian's Bochs has no nogui).
    # The dummy sound drivers matter: the default ALSA probe crashes Bochs
    # ("buffer overflow detected") on a machine without a sound card.
    rc.write_text(f"""\
{memory}
romimage: file={BOCHS_BIOS}, options=fastboot
vgaromimage: file={VGA_BIOS}
cpu: model={cpu_model}, count={cpus}, ips=100000000, reset_on_triple_fault=0
ata0-master: type=cdrom, path={iso.resolve()}, status=inserted
boot: cdrom
display_library: term
com1: enabled=1, {com1}
log: {workdir / 'bochs.log'}
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
mouse: enabled=0
clock: {clock}
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
""")
    cmds = workdir / "bochs.cmds"
    cmds.write_text("c\nquit\n")  # the built-in debugger: continue, then leave
    return rc, cmds


def bochs_missing() -> str | None:
    """Why Bochs cannot run here headless (names the Debian package to install), or None."""
    if shutil.which("bochs") is None or shutil.which("script") is None:
        return "bochs or script not found: install the Debian packages bochs bochsbios vgabios"
    if not any(Path("/usr/lib").glob("*/bochs/plugins/libbx_term_gui.so*")):
        return "Bochs's term display is missing: install the Debian package bochs-term"
    return None


def bochs_argv(bochsrc: Path, cmds: Path) -> list[str]:
    """Run Bochs non-interactively: `script` gives its term display a pty of its own."""
    inner = f"bochs -q -f {shlex.quote(str(bochsrc))} -rc {shlex.quote(str(cmds))}"
    return ["script", "-qfec", inner, "/dev/null"]


class BochsRun:
    """Bochs booting an ISO in the background, its COM1 on a pty this object reads and writes.

    The serial output is also appended to `serial_path` as it arrives. Bochs's
    exit status means nothing (FACTS.md): judge a run by what `follow` sees.
    """

    def __init__(self, iso: Path, workdir: Path, *, cpu_model: str = "corei7_skylake_x",
                 memory_mb: int = 128, cpus: int = 1, rtc_base: str | None = None) -> None:
        self.iso, self.workdir = iso, workdir
        self.cpu_model, self.memory_mb, self.cpus = cpu_model, memory_mb, cpus
        self.rtc_base = rtc_base
        self.serial_path = workdir / "serial.txt"
        self.output = b""
        self._seen = 0
        self._master = -1
        self._slave = -1
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        missing = bochs_missing()
        if missing:
            raise RuntimeError(missing)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # bytes pass untouched: no echo, no CR/LF mapping
        rc, cmds = bochs_files(self.iso, self.workdir, cpu_model=self.cpu_model,
                               memory_mb=self.memory_mb, cpus=self.cpus, serial_tty=os.ttyname(self._slave),
                               rtc_base=self.rtc_base)
        self.serial_path.write_bytes(b"")
        self._proc = subprocess.Popen(bochs_argv(rc, cmds), cwd=self.workdir,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop Bochs (its whole process group) and release the pty."""
        if self._proc is not None and self._proc.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self._proc.pid, sig)
                    self._proc.wait(timeout=wait_s)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if ready:
            data = os.read(self._master, 4096)
            self.output += data
            with self.serial_path.open("ab") as log:
                log.write(data)

    def follow(self, pattern: str | bytes, timeout: float = 60) -> re.Match[bytes]:
        """Wait for `pattern` (a regex) in the serial output after the previous match."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.output, self._seen)
            if match:
                self._seen = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or (self._proc is not None and self._proc.poll() is not None):
                state = "timed out" if left <= 0 else "Bochs exited"
                raise TimeoutError(f"{state} waiting for {regex.pattern!r}; serial tail: "
                                   f"{self.output[-300:]!r} (log: {self.workdir / 'bochs.log'})")
            self._read(min(left, 0.2))

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def fileno(self) -> int:
        """The pty master carrying COM1, for callers that talk to it directly."""
        return self._master

    def send(self, text: str | bytes) -> None:
        """Type `text` at the guest's COM1."""
        os.write(self._master, text.encode() if isinstance(text, str) else text)
