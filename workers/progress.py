"""A progress line for operator tools: done/total, rate and ETA, redrawn in place on a
terminal and printed every few seconds otherwise (logs, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    def __init__(
        self, label: str, total: int, out: TextIO | None = None, every_s: float = 5.0
    ) -> None:
        self.label = label
        self.total = max(total, 0)
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.every_s = every_s if not self.tty else 0.1
        self.done = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        self.total = max(self.total, self.done)
        now = time.monotonic()
        if now - self._shown >= self.every_s:
            self._shown = now
            self._show()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        share = self.done / self.total if self.total else 1.0
        width = 30
        bar = "#" * int(share * width) + "." * (width - int(share * width))
        rate = self.rate
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"{self.label} [{bar}] {share:6.1%} {self.done:,}/{self.total:,} events "
            f"{rate:,.0f} ev/s ETA {_duration(eta)}"
        )

    def _show(self) -> None:
        if self.tty:
            self.out.write("\r" + self.line())
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()

    def finish(self) -> None:
        self._show()
        if self.tty:
            self.out.write("\n")
        elapsed = time.monotonic() - self.started
        self.out.write(f"{self.label}: {self.done:,} events in {elapsed:.1f}s\n")
        self.out.flush()
