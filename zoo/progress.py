"""One progress bar for the zoo's long loops (evaluation, importance sampling, calibration,
export parity), written to stderr so it never mixes with a command's results on stdout.

In a terminal the bar redraws in place (``\\r``, at most 10 times a second); in a log
(stderr is not a TTY) it prints one line when it starts and one each time another tenth
is done, so a log shows progress without thousands of lines. A loop of one step has no
progress to show and prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import IO

__all__ = ["Progress"]

WIDTH = 30
REDRAW_SECONDS = 0.1


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class Progress:
    """``label [=====.....] done/total unit, elapsed, ETA`` on ``stream`` (default stderr).

    >>> with Progress(40, "scoring", unit="batches") as bar:
    ...     for batch in batches:
    ...         bar.update()
    """

    def __init__(
        self, total: int, label: str, *, unit: str = "steps", stream: IO[str] | None = None
    ):
        self.total = max(int(total), 0)
        self.label = label
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.interactive = bool(isatty and isatty())
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0
        self._tenths = -1
        self._closed = self.total == 1  # one step: nothing to show
        if not self._closed:
            self._draw(force=True)

    def line(self) -> str:
        """The current state as one line (no newline)."""
        elapsed = time.monotonic() - self.started
        if self.total:
            filled = int(WIDTH * self.done / self.total)
            bar = "=" * filled + "." * (WIDTH - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total} {self.unit}"
            text += f", {_duration(elapsed)}"
            if 0 < self.done < self.total:
                text += f", ETA {_duration(elapsed / self.done * (self.total - self.done))}"
            return text
        return f"{self.label}: {self.done} {self.unit}, {_duration(elapsed)}"

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.interactive:
            if force or now - self._drawn >= REDRAW_SECONDS:
                self.stream.write("\r" + self.line())
                self.stream.flush()
                self._drawn = now
            return
        tenths = 10 * self.done // self.total if self.total else 0
        if force or tenths > self._tenths:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._tenths = tenths

    def update(self, steps: int = 1) -> None:
        """``steps`` more are done."""
        self.done = min(self.done + int(steps), self.total) if self.total else self.done + steps
        if not self._closed:
            self._draw(force=self.done == self.total)

    def close(self) -> None:
        """End the bar's line (in a terminal, after drawing its final state)."""
        if self._closed:
            return
        self._closed = True
        if self.interactive:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
        elif self._tenths < 10:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
