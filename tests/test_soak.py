"""A short soak (the full one is `make soak`, 10 minutes): mixed traffic under random
real faults; RSS and the failure rate must stay flat."""

from __future__ import annotations

import io

from eagle.testing.soak import run


def test_short_soak_stays_flat() -> None:
    out = io.StringIO()
    result = run(seconds=20, threads=4, report=2.0, seed=1, out=out)
    assert result.faults, "no fault was injected"
    assert len(result.samples) >= 8
    assert result.ok, (result.problems, out.getvalue())
    total_calls, total_fails = result.samples[-1][1], result.samples[-1][2]
    assert total_calls > 500
    assert total_fails / total_calls < 0.05, out.getvalue()
