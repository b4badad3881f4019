"""Assembling x86 text with keystone-engine, isolated in a child process so its crashes become errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

# Keystone 0.9.2 can abort the whole process from inside LLVM ("LLVM ERROR",
# keystone issue #307), so it never runs in the build's own interpreter. The
# child answers one JSON line per job, flushed, so a crash is attributed to
# the job that was running when it happened.
_CHILD = r"""
import json, re, sys
from keystone import Ks, KsError, KS_ARCH_X86, KS_MODE_16, KS_MODE_32, KS_MODE_64

LABEL = re.compile(r"^\s*([A-Za-z_.$][\w.$]*)\s*:")
EQU = re.compile(r"^\s*\.(?:equ|set)\s+([A-Za-z_.$][\w.$]*)\s*,")


def statement(line):
    return line.split("#", 1)[0].strip()


def assemble(source, mode, base):
    ks = Ks(KS_ARCH_X86, {16: KS_MODE_16, 32: KS_MODE_32, 64: KS_MODE_64}[mode])
    encoding, _ = ks.asm(source, base)
    return bytes(encoding or [])


def names_defined(line):
    return {m.group(1) for pattern in (LABEL, EQU) for m in [pattern.match(line)] if m}


def locate(source, mode, base, errno):
    # Keystone reports no line number. Try each line alone, with every name the
    # rest of the source defines stubbed to 0: the first line that fails the
    # same way is the culprit.
    lines = source.splitlines()
    defined = set()
    for line in lines:
        defined |= names_defined(statement(line))
    for number, line in enumerate(lines, 1):
        text = statement(line)
        if not text:
            continue
        stubs = "".join(".equ %s, 0\n" % n for n in sorted(defined - names_defined(text)))
        try:
            assemble(stubs + text + "\n", mode, base)
        except KsError as error:
            if error.errno == errno:
                return number, line.strip()
    return None


for job in json.load(sys.stdin):
    try:
        out = {"ok": assemble(job["source"], job["mode"], job["base"]).hex()}
    except KsError as error:
        where = locate(job["source"], job["mode"], job["base"], error.errno)
        out = {"error": str(error), "where": where}
    print(json.dumps(out), flush=True)
"""

_TIMEOUT_SECONDS = 120


class AssemblyError(Exception):
    """Keystone refused, crashed on, or silently dropped a piece of assembly."""

    def __init__(self, message: str, *, job: str = "", line_number: int | None = None,
                 line: str | None = None, keystone_message: str = "") -> None:
        super().__init__(message)
        self.job = job
        self.line_number = line_number
        self.line = line
        self.keystone_message = keystone_message


@dataclass(frozen=True)
class AsmJob:
    """One piece of assembly: its text, CPU mode (16, 32 or 64) and absolute load address."""

    source: str
    mode: int
    base: int
    name: str = "<source>"


def _has_statements(source: str) -> bool:
    for line in source.splitlines():
        text = line.split("#", 1)[0].strip()
        if text and not text.endswith(":"):
            return True
    return False


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def assemble_many(jobs: Sequence[AsmJob], *, python: str = sys.executable) -> list[bytes]:
    """Assemble every job in one keystone child process; raise AssemblyError on the first failure."""
    for job in jobs:
        if job.mode not in (16, 32, 64):
            raise ValueError(f"{job.name}: mode must be 16, 32 or 64, not {job.mode}")
    if not jobs:
        return []
    payload = json.dumps([{"source": j.source, "mode": j.mode, "base": j.base} for j in jobs])
    try:
        proc = subprocess.run([python, "-c", _CHILD], check=False, input=payload,
                              capture_output=True, text=True, timeout=_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired as error:
        raise AssemblyError(f"keystone child timed out after {_TIMEOUT_SECONDS}s") from error

    results: list[bytes] = []
    for job, answer_line in zip(jobs, proc.stdout.splitlines(), strict=False):
        answer = json.loads(answer_line)
        if "error" in answer:
            where = answer["where"]
            location = (f" at line {where[0]}: {where[1]!r}" if where
                        else " (keystone did not say which line)")
            raise AssemblyError(f"keystone rejected {job.name}{location}: {answer['error']}",
                                job=job.name, line_number=where[0] if where else None,
                                line=where[1] if where else None,
                                keystone_message=answer["error"])
        code = bytes.fromhex(answer["ok"])
        if not code and _has_statements(job.source):
            raise AssemblyError(f"keystone produced no bytes for {job.name}, which has statements",
                                job=job.name)
        results.append(code)

    if len(results) < len(jobs):
        culprit = jobs[len(results)]
        stderr = proc.stderr.strip()[-2000:] or "(no message)"
        raise AssemblyError(
            f"keystone crashed ({_describe_exit(proc.returncode)}) while assembling "
            f"{culprit.name}: {stderr}", job=culprit.name, keystone_message=stderr)
    if proc.returncode != 0:
        raise AssemblyError(f"keystone child failed ({_describe_exit(proc.returncode)}): "
                            f"{proc.stderr.strip()[-2000:]}")
    return results


def assemble(source: str, *, mode: int, base: int) -> bytes:
    """Assemble Intel-syntax `source` for `mode` (16, 32 or 64) as if loaded at absolute `base`."""
    return assemble_many([AsmJob(source, mode, base)])[0]
