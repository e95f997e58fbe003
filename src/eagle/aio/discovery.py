"""The asyncio discovery runner: one task per channel, in the channel's event loop, that
runs its discovery provider and applies each new member set through the channel's
``update_endpoints``.

The asyncio twin of :mod:`eagle._sync.discovery`: same core
(:mod:`eagle.core.discovery`), same names; resolutions are awaited
(``loop.getaddrinfo``, dnspython's asyncio resolver, an etcd watch on an
``eagle.aio`` channel), so nothing blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..config import DiscoveryConfig
from ..core.balancer import Balancer
from ..core.discovery import DiscoveryStatus, MemberSet, Resolution, ResolveSchedule
from ..core.status import State, Transition
from ..providers.discovery import DiscoveryProvider
from .timers import call_in_loop

__all__ = ["Discovery"]

log = logging.getLogger("eagle.aio.discovery")


class Discovery:
    """Runs one asyncio channel's discovery provider in a task (see the module docstring).

    It is also the :class:`~eagle.providers.discovery.AioDiscoverySession` a watching
    provider gets.
    """

    def __init__(
        self,
        provider: DiscoveryProvider,
        config: DiscoveryConfig,
        balancer: Balancer,
        apply: Callable[[Sequence[str]], Awaitable[None]],
        initial: Sequence[str] = (),
    ) -> None:
        self.provider = provider
        self._config = config
        self._bal = balancer
        self._apply = apply
        self.members = MemberSet(provider.name, provider.describe(), initial)
        self.schedule = ResolveSchedule(config.period, config.min_interval)
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._first: asyncio.Event | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the runner task in the running loop (the first resolution at once)."""
        if self._task is not None or self._stopped:
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._first = asyncio.Event()
        if self._config.resolve_on_failure and self.provider.polling:
            self._unsubscribe = self._bal.on_change(self._on_transition)
        self._task = self._loop.create_task(
            self._run(), name=f"eagle-discovery-{self.provider.name}"
        )

    async def stop(self) -> None:
        """Stop the runner (a watch in flight is cancelled) and release the provider.
        Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._wakeup is not None:
            self._wakeup.set()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        try:
            await self.provider.close_async()
        except Exception:
            log.debug("discovery provider close failed", exc_info=True)
        self._first_done()

    async def wait_first(self, timeout: float | None) -> bool:
        """Wait until the first resolution finished (good or not); False on timeout."""
        if self._first is None:
            return False
        try:
            await asyncio.wait_for(self._first.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ session
    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopped

    async def offer(self, resolution: Resolution) -> None:
        """Fold in one resolution; apply the member set when it changed."""
        if self._stopped:
            return
        change = self.members.offer(resolution)
        bal = self._bal
        bal.members_note = self.members.note(resolution, self.provider.name, bal.members_note)
        if change is not None:
            try:
                await self._apply(change.endpoints)
            except ValueError:
                if not self._stopped:
                    log.exception("discovery could not set endpoints %s", change.endpoints)
        self._first_done()

    def note(self, **detail: Any) -> None:
        """Provider-specific facts for ``status().discovery.detail``."""
        self.members.detail.update(detail)

    async def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when stopped (at once or meanwhile)."""
        if self._stopped:
            return True
        await asyncio.sleep(max(0.0, seconds))
        return self._stopped

    # ------------------------------------------------------------------ status
    def status(self) -> DiscoveryStatus:
        """What discovery knows now."""
        return self.members.status()

    def metadata(self) -> Mapping[str, Any]:
        """Per-endpoint metadata from the last good resolution."""
        return dict(self.members.metadata)

    # ------------------------------------------------------------------ running
    def _first_done(self) -> None:
        if self._first is not None and not self._first.is_set():
            self._first.set()
        self._bal.awaiting_members = False

    def _on_transition(self, t: Transition) -> None:
        """A member became unreachable: resolve again soon (any thread; no I/O)."""
        if t.new is not State.UNREACHABLE:
            return
        call_in_loop(self._loop, self._request)

    def _request(self) -> None:
        if self.schedule.request() and self._wakeup is not None:
            log.debug("discovery: a member is unreachable, re-resolving early")
            self._wakeup.set()

    async def _run(self) -> None:
        try:
            if self.provider.polling:
                await self._poll()
            else:
                await self.provider.watch_async(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            if not self._stopped:
                log.exception("discovery provider %s failed", self.provider.name)
        finally:
            self._first_done()

    async def _poll(self) -> None:
        sched = self.schedule
        wakeup = self._wakeup
        assert wakeup is not None
        while not self._stopped:
            left = sched.wait_time()
            if left > 0:
                wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), left)
                continue
            sched.start()
            try:
                res = await self.provider.resolve_async()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("discovery resolve raised", exc_info=True)
                res = Resolution.raised(exc)
            self.members.polled(sched, res)
            await self.offer(res)
