"""A guard that refuses (and records) subprocesses that would make CPython ``fork()``.

CPython starts a child with ``vfork()`` + ``exec`` (or ``posix_spawn``) unless the
:class:`subprocess.Popen` call asks for ``preexec_fn``, ``user``, ``group`` or
``extra_groups``: those run Python code or ``setuid``/``setgid``/``setgroups`` in the child,
so ``_posixsubprocess`` falls back to a full ``fork()`` ("Use vfork() only if it's safe" in
CPython's ``Modules/_posixsubprocess.c``). A forked child of a process whose other threads
are inside gRPC can die before it execs: gRPC's fork handlers log "Other threads are
currently calling into gRPC, skipping fork() handlers", and the child may crash with
``ev_epoll1_linux.cc: Check failed: next_worker->state == KICKED`` or SIGSEGV (measured with
plain grpcio 1.85: 4 dead children in 3000 ``user=`` spawns under gRPC load, 0 in 3000
``setpriv`` spawns). So eagle's harnesses switch users with ``setpriv`` (which execs the real
program) and never pass those arguments.

``start_new_session`` and ``process_group`` are fine: ``setsid``/``setpgid`` are allowed after
``vfork()``. A :class:`SpawnGuard` wraps ``Popen._execute_child`` (the one place every
``Popen`` goes through on POSIX) while installed::

    with SpawnGuard() as guard:
        cluster.restart(0)
    assert guard.spawns and not guard.violations
"""

from __future__ import annotations

import functools
import inspect
import subprocess
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

__all__ = ["FORK_FORCING", "ForkingSpawnError", "Spawn", "SpawnGuard", "fork_forcing_arguments"]

#: ``Popen._execute_child`` parameters that make CPython fork(), and the ``Popen`` argument
#: each comes from.
FORK_FORCING: Final[dict[str, str]] = {
    "preexec_fn": "preexec_fn",
    "uid": "user",
    "gid": "group",
    "gids": "extra_groups",
}

_ExecuteChild = Callable[..., None]


class ForkingSpawnError(RuntimeError):
    """A subprocess was started with arguments that make CPython fork() instead of vfork()."""


@dataclass(frozen=True)
class Spawn:
    """One subprocess start seen by a :class:`SpawnGuard`."""

    argv: tuple[str, ...]
    #: the ``Popen`` arguments that would have made CPython fork() (empty when it can vfork)
    forcing: tuple[str, ...]
    #: where it was started from (a few stack frames)
    where: str


def fork_forcing_arguments(bound: inspect.BoundArguments) -> tuple[str, ...]:
    """The ``Popen`` argument names in ``bound`` (``_execute_child``'s) that force fork()."""
    args = bound.arguments
    return tuple(popen for name, popen in FORK_FORCING.items() if args.get(name) is not None)


def _argv(args: Any) -> tuple[str, ...]:
    if isinstance(args, str | bytes):
        return (args.decode() if isinstance(args, bytes) else args,)
    try:
        return tuple(a.decode() if isinstance(a, bytes) else str(a) for a in args)
    except TypeError:
        return (str(args),)


class SpawnGuard:
    """Records every ``subprocess.Popen`` start while installed; refuses fork-forcing ones.

    A refused start raises :class:`ForkingSpawnError` before any child exists (``refuse``,
    the default); with ``refuse=False`` it is only recorded. Guards nest: each wraps the
    ``_execute_child`` it found and puts it back on :meth:`uninstall`.
    """

    def __init__(self, *, refuse: bool = True) -> None:
        """Create a guard (not installed yet; use ``with`` or :meth:`install`)."""
        self.refuse = refuse
        self._lock = threading.Lock()
        self._spawns: list[Spawn] = []
        self._original: _ExecuteChild | None = None

    @property
    def spawns(self) -> list[Spawn]:
        """Every start seen so far, in order."""
        with self._lock:
            return list(self._spawns)

    @property
    def violations(self) -> list[Spawn]:
        """The starts that asked for fork-forcing arguments."""
        return [s for s in self.spawns if s.forcing]

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self._lock:
            self._spawns.clear()

    def install(self) -> None:
        """Start watching ``subprocess.Popen`` (idempotent)."""
        if self._original is not None:
            return
        original: _ExecuteChild = subprocess.Popen._execute_child  # type: ignore[attr-defined]
        # follows __wrapped__: an outer guard's wrapper reports the real parameter names
        signature = inspect.signature(original)
        guard = self

        @functools.wraps(original)
        def _execute_child(popen: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
            bound = signature.bind(popen, *args, **kwargs)
            spawn = Spawn(
                argv=_argv(bound.arguments.get("args")),
                forcing=fork_forcing_arguments(bound),
                where="".join(traceback.format_stack(limit=8)[:-1]),
            )
            with guard._lock:
                guard._spawns.append(spawn)
            if spawn.forcing and guard.refuse:
                raise ForkingSpawnError(
                    f"{spawn.argv[:3]} started with {', '.join(spawn.forcing)}: CPython would "
                    "fork() instead of vfork(), and a forked child of a process with gRPC "
                    "threads can crash before exec; use setpriv to switch users"
                )
            original(popen, *args, **kwargs)

        self._original = original
        subprocess.Popen._execute_child = _execute_child  # type: ignore[attr-defined]

    def uninstall(self) -> None:
        """Put back the ``_execute_child`` this guard replaced (idempotent)."""
        if self._original is None:
            return
        subprocess.Popen._execute_child = self._original  # type: ignore[attr-defined]
        self._original = None

    def __enter__(self) -> SpawnGuard:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()
