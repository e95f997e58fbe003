"""grpc's interop client cases on plain grpc (the control) and on eagle, side by side.

Every case of :mod:`eagle.testing.interop_cases` runs in every mode over a 3-member
:class:`~eagle.testing.cluster.LocalCluster`, in two scenarios:

* ``healthy``: all three members up (one cluster shared by the module);
* ``killed``: a fresh cluster per mode; once the channel is connected to all three
  members, member 0 is SIGKILLed and the mode's cases run at once, without waiting for
  eagle (or grpc) to notice.

Modes: ``grpc-sync`` / ``grpc-aio`` (the control: one ``round_robin`` channel over the three
addresses), ``eagle-sync`` / ``eagle-aio``, and each of those wrapped in pass-through
interceptors of all four kinds (``*-intercepted``): the sync ones through
``grpc.intercept_channel``, the aio ones through the channel's ``interceptors=``. An
intercepted mode also checks that every interceptor saw each application call exactly
once (:data:`eagle.testing.interop_cases.CALLS`). The grpc intercepted modes are there
to show that this expectation is grpc's own behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from _support import FAST, wait_until

import eagle
import eagle.aio
from eagle.testing.cluster import LOCAL_CHANNEL_OPTIONS, LocalCluster
from eagle.testing.interop import messages_pb2, test_pb2_grpc
from eagle.testing.interop_cases import AIO_CALLS, CALLS, CASES, run_aio, run_sync

pytestmark = pytest.mark.timeout(60)

#: eagle config of every eagle mode: probes every 0.2 s
CFG: dict[str, object] = FAST

MODES = (
    "grpc-sync",
    "grpc-aio",
    "grpc-sync-intercepted",
    "grpc-aio-intercepted",
    "eagle-sync",
    "eagle-aio",
    "eagle-sync-intercepted",
    "eagle-aio-intercepted",
)
SCENARIOS = ("healthy", "killed")
_KILLED_MEMBER = 0
_AIO_CASE_BOUND = 30.0  # seconds; every call inside has a 10 s deadline

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


# ------------------------------------------------------------------- interceptors


class _SyncPassthrough(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """All four sync client interceptor kinds; counts calls by kind, changes nothing."""

    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls["unary_unary"] += 1
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls["unary_stream"] += 1
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        self.calls["stream_unary"] += 1
        return continuation(details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        self.calls["stream_stream"] += 1
        return continuation(details, requests)


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls["unary_unary"] += 1
        return await continuation(details, request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        self.calls["unary_stream"] += 1
        return await continuation(details, request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        self.calls["stream_unary"] += 1
        return await continuation(details, requests)


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, calls: Counter[str]) -> None:
        self.calls = calls

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        self.calls["stream_stream"] += 1
        return await continuation(details, requests)


def _aio_interceptors(calls: Counter[str]) -> list[Any]:
    """One pass-through interceptor of each grpc.aio kind, all counting into ``calls``."""
    return [
        _AioUnaryUnary(calls),
        _AioUnaryStream(calls),
        _AioStreamUnary(calls),
        _AioStreamStream(calls),
    ]


# ----------------------------------------------------------------------- channels


def _grpc_target(cluster: LocalCluster) -> str:
    return "ipv4:" + ",".join(cluster.endpoints)


_GRPC_OPTIONS = [("grpc.lb_policy_name", "round_robin"), *LOCAL_CHANNEL_OPTIONS]


class _Env:
    """One mode's channel (and event loop for aio) in one scenario."""

    def __init__(self, mode: str, cluster: LocalCluster, owns_cluster: bool) -> None:
        self.mode = mode
        self.cluster = cluster
        self.owns_cluster = owns_cluster
        self.calls: Counter[str] = Counter()
        self.intercepted = mode.endswith("-intercepted")
        self.is_aio = "-aio" in mode
        self.runner: asyncio.Runner | None = None
        self.channel: Any = None
        self.raw: Any = None  # the eagle channel under any interceptor
        if self.is_aio:
            self.runner = asyncio.Runner()
            try:
                self.channel = self.runner.run(self._make_aio())
            except BaseException:
                self.runner.close()
                raise
        else:
            self.channel = self._make_sync()

    def _make_sync(self) -> Any:
        if self.mode.startswith("grpc"):
            base = grpc.insecure_channel(_grpc_target(self.cluster), options=_GRPC_OPTIONS)
        else:
            base = eagle.insecure_channel(self.cluster.endpoints, config=CFG)
            self.raw = base
        self._base = base
        if self.intercepted:
            return grpc.intercept_channel(base, _SyncPassthrough(self.calls))
        return base

    async def _make_aio(self) -> Any:
        extra: dict[str, Any] = {}
        if self.intercepted:
            extra["interceptors"] = _aio_interceptors(self.calls)
        if self.mode.startswith("grpc"):
            ch = grpc.aio.insecure_channel(
                _grpc_target(self.cluster), options=_GRPC_OPTIONS, **extra
            )
        else:
            ch = eagle.aio.insecure_channel(self.cluster.endpoints, config=CFG, **extra)
            self.raw = ch
        self._base = ch
        return ch

    def warm_up(self) -> None:
        """Calls answered by every member (so every connection is up) and, for eagle,
        every member SERVING in ``status()``."""
        if self.runner is not None:
            self.runner.run(_aio_warm_up(self.channel, self.raw))
        else:
            stub = test_pb2_grpc.TestServiceStub(self.channel)
            deadline = time.monotonic() + _WARM_UP_BOUND
            seen: set[str] = set()
            while len(seen) < 3:
                assert time.monotonic() < deadline, f"only {sorted(seen)} answered"
                seen.add(stub.UnaryCall(_WHO, timeout=10).server_id)
            if self.raw is not None:
                raw = self.raw
                wait_until(
                    lambda: all(s.serving for s in raw.status().values()),
                    _WARM_UP_BOUND,
                    "eagle sees every member SERVING",
                )
        self.calls.clear()

    def run(self, case: str) -> None:
        if self.runner is not None:
            self.runner.run(asyncio.wait_for(run_aio(case, self.channel), _AIO_CASE_BOUND))
        else:
            run_sync(case, self.channel)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.runner is not None:
                self.runner.run(self._base.close())
            else:
                self._base.close()
        if self.runner is not None:
            self.runner.close()
        if self.owns_cluster:
            self.cluster.close()


_WHO = messages_pb2.SimpleRequest(fill_server_id=True)
_WARM_UP_BOUND = 10.0


async def _aio_warm_up(channel: Any, raw: Any) -> None:
    """:meth:`_Env.warm_up` on the event loop (the aio prober runs only while it does)."""
    stub = test_pb2_grpc.TestServiceStub(channel)
    deadline = time.monotonic() + _WARM_UP_BOUND
    seen: set[str] = set()
    while len(seen) < 3:
        assert time.monotonic() < deadline, f"only {sorted(seen)} answered"
        seen.add((await stub.UnaryCall(_WHO, timeout=10)).server_id)
    while raw is not None and not all(s.serving for s in raw.status().values()):
        assert time.monotonic() < deadline, f"eagle never saw all SERVING: {raw.status()}"
        await asyncio.sleep(0.02)


class _Envs:
    """The current (scenario, mode) environment; switching closes the previous one.

    A failure to build an environment (e.g. a missing keyword) is kept and raised
    again by every test of that environment, so each one fails with the real error.
    """

    def __init__(self, shared: LocalCluster) -> None:
        self.shared = shared
        self.key: tuple[str, str] | None = None
        self.env: _Env | None = None
        self.error: BaseException | None = None

    def get(self, scenario: str, mode: str) -> _Env:
        if self.key != (scenario, mode):
            self.close()
            self.key = (scenario, mode)
            self.error = None
            try:
                self.env = self._build(scenario, mode)
            except Exception as exc:
                self.error = exc
        if self.error is not None:
            raise self.error
        assert self.env is not None
        return self.env

    def _build(self, scenario: str, mode: str) -> _Env:
        if scenario == "healthy":
            return _Env(mode, self.shared, owns_cluster=False)
        cluster = LocalCluster(3)
        try:
            env = _Env(mode, cluster, owns_cluster=True)
        except BaseException:
            cluster.close()
            raise
        try:
            env.warm_up()
        except BaseException:
            env.close()
            raise
        cluster.kill(_KILLED_MEMBER)  # and run the cases at once
        return env

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env = None
        self.key = None


@pytest.fixture(scope="module")
def envs(shared_cluster: LocalCluster) -> Iterator[_Envs]:
    manager = _Envs(shared_cluster)
    yield manager
    manager.close()


# -------------------------------------------------------------------------- tests

MATRIX = [(s, m, c) for s in SCENARIOS for m in MODES for c in CASES]


@pytest.mark.parametrize(
    ("scenario", "mode", "case"), MATRIX, ids=[f"{s}-{m}-{c}" for s, m, c in MATRIX]
)
def test_interop_case(envs: _Envs, scenario: str, mode: str, case: str) -> None:
    env = envs.get(scenario, mode)
    env.calls.clear()
    env.run(case)
    if env.intercepted:
        calls = AIO_CALLS if env.is_aio else CALLS
        want = {kind: calls[case].get(kind, 0) for kind in _KINDS}
        seen = {kind: env.calls.get(kind, 0) for kind in _KINDS}
        assert seen == want, f"interceptor calls by kind: expected {want}, saw {seen}"


def test_matrix_covers_every_case_once() -> None:
    assert len(CASES) == 16 and len(set(CASES)) == 16
    assert set(CALLS) == set(CASES)
    assert len(MATRIX) == len(SCENARIOS) * len(MODES) * len(CASES)
