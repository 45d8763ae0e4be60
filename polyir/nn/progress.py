"""A progress bar for slow work (grounding a large batch): shown on a terminal only once the work
has taken longer than a second, so that fast calls print nothing and pay one clock read."""
from __future__ import annotations

import os
import sys
import time


class Progress:
    """A rich progress bar that appears only once grounding has taken longer than `after`
    seconds, on a terminal (or when POLYIR_PROGRESS=1); otherwise it costs a clock read."""

    def __init__(self, total: int, enabled: bool | None = None, after: float = 1.0):
        if enabled is None:
            enabled = os.environ.get("POLYIR_PROGRESS", "") == "1" or \
                (os.environ.get("POLYIR_PROGRESS", "") != "0" and sys.stderr.isatty())
        self.enabled, self.total, self.after = enabled, total, after
        self.start = time.perf_counter()
        self.done = 0
        self.bar = self.task = None

    def step(self, what: str):
        self.done += 1
        if not self.enabled:
            return
        if self.bar is None and time.perf_counter() - self.start > self.after:
            from rich.progress import (BarColumn, Progress as Bar, TextColumn,
                                       TimeElapsedColumn)
            self.bar = Bar(TextColumn("grounding {task.description}"), BarColumn(),
                           TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                           transient=True)
            self.bar.start()
            self.task = self.bar.add_task(what, total=self.total)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, description=what)

    def close(self):
        if self.bar is not None:
            self.bar.stop()


__all__ = ["Progress"]
