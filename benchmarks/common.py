"""What every scenario shares: options, the run directory, progress, timing helpers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID

from .clients import ClientSpec, matches


@dataclass
class Options:
    """Command-line options, resolved for quick or full mode."""

    quick: bool
    scenarios: list[str]
    clients: list[str] | None
    duration: float  # fault matrix: seconds of load per scenario
    concurrency: int  # fault matrix: threads (sync) / tasks (asyncio) per client
    rate: float  # fault matrix: calls/s per client (0 = as fast as possible)
    deadline: float
    out: Path
    update_latest: bool

    @property
    def fault_at(self) -> float:
        """When faults start, seconds after load starts (issue 2/3: t = 2 s)."""
        return min(2.0, round(self.duration * 0.3, 2))


@dataclass
class Ctx:
    """One benchmark run: options, output folders, progress, collected results."""

    opts: Options
    console: Console
    progress: Progress
    results: dict[str, Any] = field(default_factory=dict)
    _task: TaskID | None = None

    @property
    def out(self) -> Path:
        return self.opts.out

    @property
    def raw(self) -> Path:
        p = self.opts.out / "raw"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def logs(self) -> Path:
        p = self.opts.out / "logs"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def select(self, clients: list[ClientSpec], always: tuple[str, ...] = ()) -> list[ClientSpec]:
        """Clients chosen by ``--clients`` (``always`` labels are kept: baselines)."""
        return [c for c in clients if c.label in always or matches(c.label, self.opts.clients)]

    def log(self, msg: str) -> None:
        self.console.log(msg)

    def stage(self, description: str, total: float) -> None:
        """Start a progress bar for one stage (``total`` in seconds, an estimate)."""
        if self._task is not None:
            self.progress.remove_task(self._task)
        self._task = self.progress.add_task(escape(description), total=max(total, 0.1))

    def advance_to(self, seconds: float) -> None:
        if self._task is not None:
            self.progress.update(self._task, completed=seconds)

    def sleep_until(self, t: float, t0: float | None = None) -> None:
        """Sleep until monotonic ``t``, moving the stage bar (time since ``t0``)."""
        while True:
            now = time.monotonic()
            if t0 is not None:
                self.advance_to(now - t0)
            left = t - now
            if left <= 0:
                return
            time.sleep(min(left, 0.1))

    def end_stage(self) -> None:
        if self._task is not None:
            self.progress.remove_task(self._task)
            self._task = None


def rel(t0: float) -> float:
    """Seconds since ``t0`` (monotonic)."""
    return time.monotonic() - t0
