"""Concurrency: 32 threads (sync) and 500 tasks (asyncio) call while members flap every
200 ms and `update_endpoints` adds and removes members (so pickers are rebuilt).

Must hold: no call hangs past its deadline, no exception other than grpc.RpcError reaches
the caller, and the status table never shows a state that no transition produced."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Iterator

import grpc
import pytest
from _support import FAST

import eagle
import eagle.aio
from eagle import State, Transition
from eagle.testing.cluster import LocalCluster
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

RUN = 5.0
DEADLINE = 1.0
SLACK = 0.5  # scheduling slack on a loaded 2-core machine


def _tracebacks(errors: list[BaseException]) -> str:
    """The first few unexpected exceptions with where they were raised."""
    return "\n".join("".join(traceback.format_exception(e)) for e in errors[:3])


@pytest.fixture
def four() -> Iterator[LocalCluster]:
    with LocalCluster(4) as c:
        yield c


class Chaos:
    """Flaps members every 200 ms and changes the member set; records what it saw."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.transitions: dict[str, list[State]] = defaultdict(list)
        self.observed: list[tuple[str, State]] = []
        self.lock = threading.Lock()

    def on_change(self, t: Transition) -> None:
        with self.lock:
            self.transitions[t.endpoint].append(t.new)

    def flap(self) -> None:
        i = 0
        drained: set[int] = set()
        while not self.stop.wait(0.2):
            idx = i % 4
            if idx in drained:
                self.cluster.undrain(idx)
                drained.discard(idx)
            else:
                self.cluster.drain(idx)
                drained.add(idx)
            i += 1
        for idx in drained:
            self.cluster.undrain(idx)

    def check(self) -> None:
        with self.lock:
            for ep, state in self.observed:
                assert state is State.UNKNOWN or state in self.transitions[ep], (ep, state)


def test_sync_32_threads_under_chaos(four: LocalCluster) -> None:
    eps = four.endpoints
    chaos = Chaos(four)
    errors: list[BaseException] = []
    late: list[float] = []
    calls = [0]
    with eagle.insecure_channel(eps[:3], config=FAST) as ch:
        ch.on_change(chaos.on_change)
        stub = echo_pb2_grpc.EchoStub(ch)
        end = time.monotonic() + RUN

        def caller() -> None:
            while time.monotonic() < end:
                start = time.monotonic()
                try:
                    stub.Unary(echo_pb2.EchoRequest(message="c"), timeout=DEADLINE)
                except grpc.RpcError:
                    pass
                except BaseException as exc:
                    errors.append(exc)
                took = time.monotonic() - start
                if took > DEADLINE + SLACK:
                    late.append(took)
                calls[0] += 1

        def membership() -> None:
            sets = [eps[:3], eps[1:], [eps[0], eps[2], eps[3]], eps]
            i = 0
            while not chaos.stop.wait(0.3):
                ch.update_endpoints(sets[i % len(sets)])
                i += 1
                for ep, st in ch.status().items():
                    chaos.observed.append((ep, st.state))

        threads = [threading.Thread(target=caller) for _ in range(32)]
        helpers = [threading.Thread(target=chaos.flap), threading.Thread(target=membership)]
        for t in threads + helpers:
            t.start()
        for t in threads:
            t.join(RUN + 10)
        chaos.stop.set()
        for t in helpers:
            t.join(10)
        assert not any(t.is_alive() for t in threads), "a call hung"
        time.sleep(0.3)
        for ep, st in ch.status().items():
            chaos.observed.append((ep, st.state))
            history = chaos.transitions[ep]
            assert st.state is (history[-1] if history else State.UNKNOWN)
    assert not errors, _tracebacks(errors)
    assert not late, f"{len(late)} calls overran their deadline, worst {max(late):.2f}s"
    assert calls[0] > 100
    chaos.check()


def test_aio_500_tasks_under_chaos(four: LocalCluster) -> None:
    eps = four.endpoints
    chaos = Chaos(four)
    errors: list[BaseException] = []
    late: list[float] = []

    async def main() -> int:
        n = 0
        async with eagle.aio.insecure_channel(eps[:3], config=FAST) as ch:
            ch.on_change(chaos.on_change)
            stub = echo_pb2_grpc.EchoStub(ch)
            end = time.monotonic() + RUN

            async def caller() -> None:
                nonlocal n
                while time.monotonic() < end:
                    start = time.monotonic()
                    try:
                        await stub.Unary(echo_pb2.EchoRequest(message="c"), timeout=DEADLINE)
                    except grpc.RpcError:
                        pass
                    except BaseException as exc:
                        errors.append(exc)
                    took = time.monotonic() - start
                    if took > DEADLINE + SLACK:
                        late.append(took)
                    n += 1

            async def membership() -> None:
                sets = [eps[:3], eps[1:], [eps[0], eps[2], eps[3]], eps]
                i = 0
                while time.monotonic() < end:
                    await asyncio.sleep(0.3)
                    await ch.update_endpoints(sets[i % len(sets)])
                    i += 1
                    for ep, st in ch.status().items():
                        chaos.observed.append((ep, st.state))

            flapper = threading.Thread(target=chaos.flap)
            flapper.start()
            try:
                await asyncio.wait_for(
                    asyncio.gather(*[caller() for _ in range(500)], membership()),
                    RUN + 10,
                )
            finally:
                chaos.stop.set()
                flapper.join(10)
            await asyncio.sleep(0.3)
            for ep, st in ch.status().items():
                history = chaos.transitions[ep]
                assert st.state is (history[-1] if history else State.UNKNOWN)
        return n

    n = asyncio.run(main())
    assert not errors, _tracebacks(errors)
    assert not late, f"{len(late)} calls overran their deadline, worst {max(late):.2f}s"
    assert n > 100
    chaos.check()
