"""Progress of long loops: a tqdm bar on a terminal, plain periodic lines in a log file.

Redirected to a file, a tqdm bar redraws itself with carriage returns (``make demo > log``
made a 287 KB log of 65 lines). :func:`progress_bar` draws a bar only when its stream is a
terminal; otherwise it returns a :class:`LineProgress`, which writes one plain line every
``every`` seconds and a last one at the end::

    train 150/300 it (50%), 0.212 s/it, ETA 32 s, loss 0.0123

Both have ``update``, ``set_postfix``, ``unpause`` and ``close``. ``unpause()`` after work
that is not part of the loop (validation) leaves the time since the last update out of the
rate, so the ETA does not jump at every validation.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm


def format_seconds(seconds: float) -> str:
    """``"42 s"``, ``"3.5 min"``, ``"2.1 h"``, ``"4.2 days"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 72 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def progress_bar(
    total: int,
    initial: int = 0,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    stream: TextIO | None = None,
    every: float = 30.0,
):
    """A tqdm bar if ``stream`` (default stderr) is a terminal, else a :class:`LineProgress`."""
    stream = stream if stream is not None else sys.stderr
    if enabled and not _is_terminal(stream):
        return LineProgress(total, initial, desc, unit, stream, every)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, file=stream)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LineProgress:
    """Plain progress lines: one every ``every`` seconds of updates, and one at the end.

    The rate counts only the time between updates that was not left out by :meth:`unpause`.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "",
        unit: str = "it",
        stream: TextIO | None = None,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.n, self.first = total, initial, initial
        self.desc, self.unit, self.every, self.clock = desc, unit, every, clock
        self.stream = stream if stream is not None else sys.stderr
        self.postfix = ""
        self.busy = 0.0  # seconds spent between updates, pauses left out
        self.last_update = self.last_line = clock()
        self.written = initial

    def update(self, n: int = 1) -> None:
        now = self.clock()
        self.busy += now - self.last_update
        self.last_update = now
        self.n += n
        if now - self.last_line >= self.every or self.n >= self.total:
            self._write(now)

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def unpause(self) -> None:
        """Leave the time since the last update out of the rate (it was not spent on this loop)."""
        self.last_update = self.clock()

    def close(self) -> None:
        if self.n > self.written:
            self._write(self.clock())

    def line(self) -> str:
        """The progress line now: done/total, percentage, seconds per unit, ETA and the postfix."""
        done = self.n - self.first
        text = f"{self.desc} {self.n}/{self.total} {self.unit}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        if done > 0:
            rate = self.busy / done
            text += f", {rate:.3g} s/{self.unit}"
            if self.n < self.total:
                text += f", ETA {format_seconds(rate * (self.total - self.n))}"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _write(self, now: float) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.last_line, self.written = now, self.n
