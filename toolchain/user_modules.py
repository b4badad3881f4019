"""The user's Python next to the TOML (a partition's `policy`), compiled by mpy-cross into the bytes the table signs."""
from __future__ import annotations

import hashlib
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolchain.config import ConfigError, SystemConfig

KINDS = ("policy",)
# The name the module's code objects carry, shown in tracebacks on the metal.
SHOWN_MAX = 95
_LOCATION = re.compile(r'File "([^"]*)", line (\d+)')


@dataclass(frozen=True)
class UserModule:
    kind: str          # one of KINDS
    owner: int         # the partition's index
    path: str          # as written in the TOML, relative to it
    mpy: bytes         # mpy-cross's output
    failure_limit: int
    budget_ms: int

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.mpy).hexdigest()


def wanted(config: SystemConfig) -> bool:
    """Whether the system names any user module (then mpy-cross is needed)."""
    return any(p.policy for p in config.partitions)


def _compile(mpy_cross: Path, source: Path, shown: str, key: str, config_path: Path) -> bytes:
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
    raise ConfigError([f"{config_path}: {key} = \"{shown}\": {where}: {message}"])


def compile_all(config: SystemConfig, mpy_cross: Callable[[], Path]) -> list[UserModule]:
    """Every user module of `config`, compiled; ConfigError naming the file and line of a syntax error."""
    modules: list[UserModule] = []
    errors: list[str] = []
    for part in config.partitions:
        if part.policy is None or part.policy_path is None:
            continue
        if len(part.policy) > SHOWN_MAX:
            errors.append(f"{config.path}: {part.key('policy')} = \"{part.policy}\": "
                          f"the path must be at most {SHOWN_MAX} characters")
            continue
        try:
            mpy = _compile(mpy_cross(), part.policy_path, part.policy, part.key("policy"), config.path)
        except ConfigError as error:
            errors += error.errors
            continue
        modules.append(UserModule("policy", part.index, part.policy, mpy, part.python_failures,
                                  config.scheduler.python_budget_ms))
    if errors:
        raise ConfigError(errors)
    return modules
