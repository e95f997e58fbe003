"""Process helpers shared by eagle's test harnesses: finding system tools, and waiting until
a process the harness signalled has really stopped (or resumed).

Tools are found by absolute path, in ``PATH`` and then in the ``sbin`` directories, which a
non-root ``PATH`` (or a CI runner's) often lacks: ``iptables``, ``useradd`` and ``dnsmasq``
live there on Debian.

``kill(pid, SIGSTOP)`` returns before the process is stopped: the kernel wakes one thread to
dequeue the signal, and only that thread starts the group stop that parks the others
(``do_signal_stop`` in the Linux kernel's ``kernel/signal.c``; see signal(7), "job control").
On a loaded CPU the chosen thread may wait for a time slice while the others go on
answering requests, so a harness waits, with a deadline, until every thread under
``/proc/<pid>/task`` reports state ``T``.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Final

__all__ = ["SYSTEM_DIRS", "find_tool", "thread_states", "wait_stopped"]

#: Searched after ``PATH`` (Debian keeps iptables, useradd and dnsmasq in the sbin ones).
SYSTEM_DIRS: Final[tuple[str, ...]] = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin")


def find_tool(name: str) -> str | None:
    """The absolute path of executable ``name`` (``PATH`` first, then :data:`SYSTEM_DIRS`)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_DIRS])
    found = shutil.which(name, path=path)
    return os.path.abspath(found) if found is not None else None


def thread_states(pid: int) -> dict[int, str]:
    """``{tid: state letter}`` of every thread of ``pid`` from ``/proc`` (empty if it is gone).

    The letter is the third field of ``/proc/<pid>/task/<tid>/stat`` (proc(5)): ``R``, ``S``,
    ``D``, ``T`` (stopped by a signal), ``t`` (tracing stop), ``Z``, ...
    """
    states: dict[int, str] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return states
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue  # the thread exited meanwhile
        end = data.rfind(b")")  # the command name may itself contain ")"
        if end >= 0 and end + 2 < len(data):
            states[int(tid)] = chr(data[end + 2])
    return states


def wait_stopped(pid: int, *, stopped: bool, timeout: float = 5.0) -> bool:
    """Wait until every thread of ``pid`` is stopped (``T``/``t``), or none is.

    Returns ``True`` once that holds, or at once if the process is gone or a zombie (there is
    nothing left to stop); ``False`` if ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        states = thread_states(pid)
        if not states or set(states.values()) <= {"Z", "X"}:
            return True
        if all((s in "Tt") == stopped for s in states.values()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
