"""The user's Python next to the TOML (a partition's `policy`, the platform's `scheduler`), compiled by mpy-cross into the bytes the table signs."""
from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolchain.config import ConfigError, SystemConfig

KINDS = ("policy", "scheduler", "device")
# The owner of the platform's scheduler module, which serves no one partition.
OWNER_PLATFORM = 0xFF
# A device module's irq when its entry names none.
NO_IRQ = 0xFF
# Failures of the scheduler module before it is unloaded (the plans in force stay).
SCHEDULER_FAILURES = 3
# The name the module's code objects carry, shown in tracebacks on the metal.
SHOWN_MAX = 95
_LOCATION = re.compile(r'File "([^"]*)", line (\d+)')


@dataclass(frozen=True)
class UserModule:
    kind: str          # one of KINDS
    owner: int         # the partition's index, or OWNER_PLATFORM
    path: str          # as written in the TOML, relative to it
    mpy: bytes         # mpy-cross's output
    failure_limit: int
    budget_ms: int
    ports: tuple[int, int] = (0, 0)   # a device's first and last port
    irq: int = NO_IRQ                  # a device's IOAPIC pin
    mmio: tuple[int, int] = (0, 0)    # a device's first and last guest-physical MMIO byte

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.mpy).hexdigest()


class CompileError(Exception):
    """mpy-cross refused a file: the message is "SHOWN:LINE: what it said"."""


def compile_source(mpy_cross: Path, source: Path, shown: str) -> bytes:
    """`source` compiled to .mpy bytes, its code named `shown`; CompileError naming the line it refused."""
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "module.mpy"
        result = subprocess.run([str(mpy_cross), "-s", shown, "-o", str(out), str(source)],
                                capture_output=True, text=True)
        if result.returncode == 0:
            return out.read_bytes()
    lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    found = _LOCATION.search(result.stderr + result.stdout)
    where = f"{shown}:{found.group(2)}" if found else shown
    message = lines[-1] if lines else f"mpy-cross exited with status {result.returncode}"
    raise CompileError(f"{where}: {message}")


def _compile(mpy_cross: Path, source: Path, shown: str, key: str, config_path: Path) -> bytes:
    try:
        return compile_source(mpy_cross, source, shown)
    except CompileError as e:
        raise ConfigError([f"{config_path}: {key} = \"{shown}\": {e}"]) from None


def compile_all(config: SystemConfig, mpy_cross: Callable[[], Path]) -> list[UserModule]:
    """Every user module of `config`, compiled; ConfigError naming the file and line of a syntax error."""
    none: dict[str, object] = {}
    wanted = [("policy", p.index, p.policy, p.policy_path, p.key("policy"), p.python_failures, none)
              for p in config.partitions if p.policy and p.policy_path]
    wanted += [("device", p.index, d.model, d.path, f"{p.key('devices')}[{n}].model", p.python_failures,
                {"ports": (d.first, d.last), "irq": NO_IRQ if d.irq is None else d.irq,
                 "mmio": d.mmio or (0, 0)}) for p in config.partitions for n, d in enumerate(p.devices)]
    if config.platform.scheduler and config.platform.scheduler_path:
        wanted.append(("scheduler", OWNER_PLATFORM, config.platform.scheduler,
                       config.platform.scheduler_path, "platform.scheduler", SCHEDULER_FAILURES, none))
    modules: list[UserModule] = []
    errors: list[str] = []
    for kind, owner, shown, source, key, failures, device in wanted:
        if len(shown) > SHOWN_MAX:
            errors.append(f"{config.path}: {key} = \"{shown}\": the path must be at most "
                          f"{SHOWN_MAX} characters")
            continue
        try:
            mpy = _compile(mpy_cross(), source, shown, key, config.path)
        except ConfigError as error:
            errors += error.errors
            continue
        modules.append(UserModule(kind, owner, shown, mpy, failures, config.scheduler.python_budget_ms,
                                  **device))
    if errors:
        raise ConfigError(errors)
    return modules
