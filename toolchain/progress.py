"""Progress of the build's long steps: one redrawn line on a terminal, one line per step elsewhere.

On a terminal the line shows the step, a percentage when the size of the
work is known (else a spinner), what it has done so far and the time so
far; it is redrawn ten times a second from a thread, so a step waiting on a
subprocess still moves. Elsewhere (a log, CI) each step prints one line when
it ends, with its time, and nothing in between.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

SPINNER = "|/-\\"
REDRAW_S = 0.1


class Step:
    """One step under way: what it has done so far, set from the step's own code."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.started = time.monotonic()
        self.fraction: float | None = None  # 0..1 when the size of the work is known
        self.note = ""  # what it has done so far, in words ("212 files compiled")
        self.poll: Callable[[Step], None] | None = None  # called before each redraw, to measure

    def update(self, fraction: float | None = None, note: str | None = None) -> None:
        if fraction is not None:
            self.fraction = max(0.0, min(1.0, fraction))
        if note is not None:
            self.note = note

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class Progress:
    """Where steps are reported: `stream` (stderr), redrawn if it is a terminal; nothing if `quiet`."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty() if tty is None else tty
        self._lock = threading.Lock()

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        """Report `title` while the block runs, then its time; a failing step is reported as failed."""
        step = Step(title)
        if self.quiet:
            yield step
            return
        stop = threading.Event()
        drawer = threading.Thread(target=self._redraw, args=(step, stop), daemon=True) if self.tty else None
        if drawer is not None:
            drawer.start()
        outcome = "failed"
        try:
            yield step
            outcome = "done"
        finally:
            stop.set()
            if drawer is not None:
                drawer.join()
            self._finish(step, outcome)

    def _line(self, step: Step, tick: int) -> str:
        if step.poll is not None:
            step.poll(step)
        mark = f"{step.fraction * 100:3.0f}%" if step.fraction is not None else f"  {SPINNER[tick % len(SPINNER)]} "
        note = f", {step.note}" if step.note else ""
        return f"{step.title}: {mark} {step.elapsed():5.1f}s{note}"

    def _redraw(self, step: Step, stop: threading.Event) -> None:
        tick = 0
        while not stop.wait(REDRAW_S if tick else 0):
            with self._lock:
                self.stream.write("\r\x1b[K" + self._line(step, tick))
                self.stream.flush()
            tick += 1

    def _finish(self, step: Step, outcome: str) -> None:
        note = f" ({step.note})" if step.note else ""
        with self._lock:
            if self.tty:
                self.stream.write("\r\x1b[K")
            self.stream.write(f"{step.title}: {outcome} in {step.elapsed():.1f}s{note}\n")
            self.stream.flush()
