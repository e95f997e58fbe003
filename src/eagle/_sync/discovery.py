"""The sync discovery runner: one daemon thread per channel that runs its discovery
provider and applies each new member set through the channel's ``update_endpoints``.

The thread is discovery's own: a blocking resolver (``getaddrinfo``, dnspython) or an
etcd watch never runs in the prober's APScheduler thread, whose job runs inline and must
not block. When to resolve, keep-last-good and the member-set diff come from
:mod:`eagle.core.discovery`; the asyncio twin is :mod:`eagle.aio.discovery`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import DiscoveryConfig
from ..core.balancer import Balancer
from ..core.discovery import DiscoveryStatus, MemberSet, Resolution, ResolveSchedule
from ..core.status import State, Transition
from ..providers.discovery import DiscoveryProvider

__all__ = ["Discovery"]

log = logging.getLogger("eagle.discovery")

#: how long ``stop()`` waits for the runner thread
_JOIN_TIMEOUT = 5.0


class Discovery:
    """Runs one channel's discovery provider in its own thread (see the module docstring).

    It is also the :class:`~eagle.providers.discovery.DiscoverySession` a watching
    provider gets: ``offer``, ``note``, ``wait``, ``on_stop`` and ``stopped``.
    """

    def __init__(
        self,
        provider: DiscoveryProvider,
        config: DiscoveryConfig,
        balancer: Balancer,
        apply: Callable[[Sequence[str]], None],
        initial: Sequence[str] = (),
    ) -> None:
        self.provider = provider
        self._config = config
        self._bal = balancer
        self._apply = apply
        self.members = MemberSet(provider.name, provider.describe(), initial)
        self.schedule = ResolveSchedule(config.period, config.min_interval)
        self._cond = threading.Condition()
        self._stopped = False
        self._stop_callbacks: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._first = threading.Event()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the runner thread (the first resolution at once)."""
        if self._thread is not None:
            return
        if self._config.resolve_on_failure and self.provider.polling:
            self._unsubscribe = self._bal.on_change(self._on_transition)
        self._thread = threading.Thread(
            target=self._run, name=f"eagle-discovery-{self.provider.name}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the runner (a watch in flight is cancelled) and release the provider.
        Idempotent."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            callbacks = self._stop_callbacks
            self._stop_callbacks = []
            self._cond.notify_all()
        if self._unsubscribe is not None:
            self._unsubscribe()
        for cb in callbacks:
            try:
                cb()
            except Exception:
                log.debug("discovery stop callback failed", exc_info=True)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)
        try:
            self.provider.close()
        except Exception:
            log.debug("discovery provider close failed", exc_info=True)
        self._first_done()

    def wait_first(self, timeout: float | None) -> bool:
        """Wait until the first resolution finished (good or not); False on timeout."""
        return self._first.wait(timeout)

    # ------------------------------------------------------------------ session
    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    def offer(self, resolution: Resolution) -> None:
        """Fold in one resolution; apply the member set when it changed."""
        if self._stopped:
            return
        with self._cond:
            change = self.members.offer(resolution)
            bal = self._bal
            bal.members_note = self.members.note(resolution, self.provider.name, bal.members_note)
        if change is not None:
            try:
                self._apply(change.endpoints)
            except ValueError:
                if not self._stopped:  # the channel closed under us: nothing to do
                    log.exception("discovery could not set endpoints %s", change.endpoints)
        self._first_done()

    def note(self, **detail: Any) -> None:
        """Provider-specific facts for ``status().discovery.detail``."""
        with self._cond:
            self.members.detail.update(detail)

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stopped (at once or meanwhile)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stopped, max(0.0, seconds))

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the runner stops (at once when it has)."""
        with self._cond:
            if not self._stopped:
                self._stop_callbacks.append(callback)
                return
        callback()

    # ------------------------------------------------------------------ status
    def status(self) -> DiscoveryStatus:
        """What discovery knows now."""
        with self._cond:
            return self.members.status()

    def metadata(self) -> Mapping[str, Any]:
        """Per-endpoint metadata from the last good resolution."""
        with self._cond:
            return dict(self.members.metadata)

    # ------------------------------------------------------------------ running
    def _first_done(self) -> None:
        if not self._first.is_set():
            self._first.set()
            self._bal.awaiting_members = False

    def _on_transition(self, t: Transition) -> None:
        """A member became unreachable: resolve again soon (runs on the prober: no I/O)."""
        if t.new is not State.UNREACHABLE:
            return
        with self._cond:
            if self.schedule.request():
                log.debug("discovery: %s unreachable, re-resolving early", t.endpoint)
                self._cond.notify_all()

    def _run(self) -> None:
        try:
            if self.provider.polling:
                self._poll()
            else:
                self.provider.watch(self)
        except Exception:
            if not self._stopped:
                log.exception("discovery provider %s failed", self.provider.name)
        finally:
            self._first_done()

    def _poll(self) -> None:
        sched = self.schedule
        while True:
            with self._cond:
                while not self._stopped and sched.wait_time() > 0:
                    self._cond.wait(sched.wait_time())
                if self._stopped:
                    return
                sched.start()
            try:
                res = self.provider.resolve()
            except Exception as exc:
                log.debug("discovery resolve raised", exc_info=True)
                res = Resolution.raised(exc)
            with self._cond:
                self.members.polled(sched, res)
            self.offer(res)
