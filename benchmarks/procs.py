"""Worker subprocesses: start, command, collect, and always clean up (by pid).

Every process this module starts is tracked in :data:`_LIVE` and killed by its own
``Popen`` handle (never by name) in :func:`kill_all`, which also runs at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import eagle

from .clients import ClientSpec

REPO_ROOT = Path(__file__).resolve().parents[1]

_LIVE: dict[int, subprocess.Popen[str]] = {}
_LIVE_LOCK = threading.Lock()


class WorkerError(RuntimeError):
    """A worker failed to start, reported an error or did not answer in time."""


class Worker:
    """One ``python -m benchmarks.worker`` process."""

    def __init__(self, spec: dict[str, Any], log_dir: Path, name: str) -> None:
        self.name = name
        self.spec = dict(spec)
        self.spec["parent"] = os.getpid()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in close()
        env = dict(os.environ)
        # the same eagle the orchestrator imported (normally REPO_ROOT/src)
        src = str(Path(eagle.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        env["PYTHONUNBUFFERED"] = "1"
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=str(REPO_ROOT),
            env=env,
            close_fds=True,
        )
        with _LIVE_LOCK:
            _LIVE[self.proc.pid] = self.proc
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self._send(json.dumps(self.spec))
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"{self.name}: worker is gone ({exc}); {self.tail()}") from None

    def _expect(self, word: str, timeout: float, tick: Callable[[], None] | None = None) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"{self.name}: no {word} within {timeout:.0f}s; {self.tail()}")
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if tick is not None:
                    tick()
                continue
            if line is None:
                raise WorkerError(f"{self.name}: exited before {word}; {self.tail()}")
            if line.startswith(word):
                return line[len(word) :].strip()
            if line.startswith("ERROR"):
                raise WorkerError(f"{self.name}: {line}; {self.tail()}")

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        rest = self._expect("READY", timeout)
        self.info = json.loads(rest) if rest else {}
        return self.info

    def go(self, t0: float, duration: float, outfile: Path) -> None:
        self._outfile = outfile
        self._send(f"GO {t0!r} {duration!r} {outfile}")

    def wait_done(self, timeout: float, tick: Callable[[], None] | None = None) -> dict[str, Any]:
        self._expect("DONE", timeout, tick)
        with open(self._outfile) as f:
            result: dict[str, Any] = json.load(f)
        return result

    def tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            self._log.flush()
            text = self.log_path.read_text(errors="replace")
            return "log tail: " + text[-n:].strip()
        return ""

    def quit(self) -> None:
        """Ask the worker to close its channel and exit (see :meth:`close`)."""
        with contextlib.suppress(WorkerError):
            if self.proc.poll() is None:
                self._send("QUIT")

    def close(self, timeout: float = 10.0) -> None:
        self.quit()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        with _LIVE_LOCK:
            _LIVE.pop(self.proc.pid, None)
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        self._log.close()


def start_workers(
    specs: list[tuple[str, dict[str, Any]]], log_dir: Path, ready_timeout: float = 60.0
) -> list[Worker]:
    """Start every worker at once and wait until each is READY (kill all on failure)."""
    workers: list[Worker] = []
    try:
        for name, spec in specs:
            workers.append(Worker(spec, log_dir, name))
        for w in workers:
            w.wait_ready(ready_timeout)
    except BaseException:
        close_all(workers, timeout=2)
        raise
    return workers


def close_all(workers: list[Worker], timeout: float = 10.0) -> None:
    """QUIT every worker at once, then wait for (or kill) each."""
    for w in workers:
        w.quit()
    for w in workers:
        w.close(timeout)


def collect(workers: list[Worker], duration: float, grace: float = 30.0) -> list[dict[str, Any]]:
    """Wait for every worker's DONE and load its result."""
    results = []
    for w in workers:
        results.append(w.wait_done(duration + grace))
    return results


def load_spec(
    client: ClientSpec,
    endpoints: list[str],
    *,
    concurrency: int,
    rate: float,
    deadline: float,
    method: str = "echo",
    server_map: dict[str, int] | None = None,
    fail_window: tuple[float, float] | None = None,
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    """The spec of one unary-load worker."""
    return {
        "job": "load",
        "client": client.to_json(),
        "endpoints": endpoints,
        "concurrency": concurrency,
        "rate": rate,
        "deadline": deadline,
        "method": method,
        "server_map": server_map or {},
        "fail_window": list(fail_window) if fail_window else None,
        "warmup_s": warmup_s,
    }


def kill_all() -> None:
    """Kill every worker still alive (by its pid), and reap it."""
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
        _LIVE.clear()
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        with contextlib.suppress(Exception):
            p.wait(timeout=10)


atexit.register(kill_all)
