"""Probes never wait on each other: 256 endpoints at a 1 s interval are all probed on
time, without one thread per endpoint (one server process listening on 256 ports)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

import eagle
import eagle.aio
from eagle.testing.cluster import LocalCluster

N = 256
#: every endpoint probed every second, with or without calls
CONFIG = {"health": {"interval": 1.0, "timeout": 0.5, "no_traffic_interval": None}}


@pytest.fixture(scope="module")
def many() -> Iterator[LocalCluster]:
    with LocalCluster.many_ports(N) as c:
        yield c


def _check_on_time(snap: eagle.StatusSnapshot, now: float) -> None:
    assert len(snap) == N
    late = [ep for ep, st in snap.items() if st.last_probe is None or now - st.last_probe > 1.6]
    assert not late, f"{len(late)} endpoints not probed within 1.6 s, e.g. {late[:3]}"
    assert all(st.state is eagle.State.SERVING for st in snap.values())


def test_sync_256_endpoints_probed_on_time(many: LocalCluster) -> None:
    before = threading.active_count()
    with eagle.insecure_channel(many.endpoints, config=CONFIG) as ch:
        time.sleep(3.5)
        counts = []
        for _ in range(3):  # every endpoint probed within each second, repeatedly
            _check_on_time(ch.status(), time.monotonic())
            counts.append(threading.active_count() - before)
            time.sleep(0.7)
    assert max(counts) < 16, f"prober used {max(counts)} threads for {N} endpoints"


def test_aio_256_endpoints_probed_on_time(many: LocalCluster) -> None:
    async def main() -> None:
        before = threading.active_count()
        async with eagle.aio.insecure_channel(many.endpoints, config=CONFIG) as ch:
            await asyncio.sleep(3.5)
            for _ in range(3):
                _check_on_time(ch.status(), time.monotonic())
                await asyncio.sleep(0.7)
            assert threading.active_count() - before < 4

    asyncio.run(main())
