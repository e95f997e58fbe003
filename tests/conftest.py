"""Shared fixtures (real echo servers on loopback), the Hypothesis profiles, and the guard
that keeps every test's subprocesses fork-free.

Hypothesis profiles (loaded here, before any test module builds its ``settings``):

* ``eagle-dev`` (the default): Hypothesis' defaults with ``deadline=None``; these tests
  check properties, not speed, and share two cores with other work.
* ``eagle-ci`` (when ``CI`` is set, as ``.ci/run`` does): Hypothesis' own ``ci`` profile
  (``derandomize=True``, ``database=None``, ``print_blob=True``, ``deadline=None``) but with
  the ``too_slow`` health check left on: a CI run is reproducible and never depends on a
  ``.hypothesis`` directory from an earlier run.

``HYPOTHESIS_PROFILE`` (or pytest's ``--hypothesis-profile``) picks another one. Examples
stay bounded: ``max_examples`` is Hypothesis' 100 unless a test sets fewer or more.

A cold checkout has no ``.hypothesis/unicode_data`` cache: the first ``st.text()`` draw then
builds Hypothesis' Unicode category table, about 1-2 s on this machine, and that time counts
as the first test's generation time, so ``too_slow`` fails it (HypothesisWorks/hypothesis
#1153, #2108). Like Hypothesis' own plugin does for its local-constants scan, we build the
table during collection, outside every test, when a Hypothesis test is collected; then
``too_slow`` only fires for strategies that really are slow.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, is_hypothesis_test, settings
from hypothesis import strategies as st
from hypothesis.errors import NonInteractiveExampleWarning

from eagle.testing.cluster import LocalCluster
from eagle.testing.spawn_guard import SpawnGuard

_HYPOTHESIS_CI = settings.get_profile("ci")
settings.register_profile("eagle-dev", parent=settings.get_profile("default"), deadline=None)
settings.register_profile(
    "eagle-ci",
    parent=_HYPOTHESIS_CI,
    deadline=None,
    suppress_health_check=[
        h for h in _HYPOTHESIS_CI.suppress_health_check if h is not HealthCheck.too_slow
    ],
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("eagle-ci" if _in_ci() else "eagle-dev")
)

#: refuses, for the whole session, any subprocess that would make CPython fork() this
#: process (which runs gRPC threads); see eagle.testing.spawn_guard
_SPAWN_GUARD = SpawnGuard()


def pytest_configure(config: pytest.Config) -> None:
    _SPAWN_GUARD.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    _SPAWN_GUARD.uninstall()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Build Hypothesis' Unicode table now if any collected test uses Hypothesis."""
    if any(isinstance(i, pytest.Function) and is_hypothesis_test(i.obj) for i in items):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NonInteractiveExampleWarning)
            st.characters().example()


#: set by .ci/run: a skipped test is a missing dependency there, not a pass
_FAIL_ON_SKIP = os.environ.get("EAGLE_FAIL_ON_SKIP", "") not in ("", "0")
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``EAGLE_FAIL_ON_SKIP=1`` a run that skipped a test fails (exit status 1).

    A run with no tests already fails on its own (pytest's exit status 5).
    """
    if _FAIL_ON_SKIP and _skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FAIL_ON_SKIP and _skipped:
        terminalreporter.section("EAGLE_FAIL_ON_SKIP", red=True)
        terminalreporter.write_line(f"{len(_skipped)} test(s) skipped, which fails this run:")
        for nodeid in _skipped:
            terminalreporter.write_line(f"  {nodeid}")


@pytest.fixture(autouse=True)
def _no_forking_spawns() -> Iterator[None]:
    """Fail the test if anything it ran (on any thread) asked for a fork-forcing Popen."""
    before = len(_SPAWN_GUARD.spawns)
    yield
    bad = [s for s in _SPAWN_GUARD.spawns[before:] if s.forcing]
    if bad:
        pytest.fail(
            "subprocess started with arguments that make CPython fork() (use setpriv):\n"
            + "\n".join(f"{s.argv} {s.forcing}\n{s.where}" for s in bad)
        )


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
