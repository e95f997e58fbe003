"""Shared fixtures: real echo servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eagle.testing.cluster import LocalCluster


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """Three fresh echo servers (m0, m1, m2) on 127.0.0.1, killed afterwards."""
    with LocalCluster(3) as c:
        yield c


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    """Three echo servers shared by a module's tests (no faults injected on them)."""
    with LocalCluster(3) as c:
        yield c
