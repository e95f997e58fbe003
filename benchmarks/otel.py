"""Issue 14: what eagle's OpenTelemetry adapter costs, as unary calls/s with it on vs off.

The same eagle client twice, once with :mod:`eagle.ops.otel` over a real OpenTelemetry
SDK (a meter provider whose periodic reader collects every second; see
:func:`benchmarks.clients.instrument_otel`) and once without, in paired interleaved rounds
on one 3-member cluster (:func:`benchmarks.overhead.measure_groups`): sync with one
thread and asyncio with 16 concurrent calls. Target: with metrics on, >= 0.97 of the
calls/s without. Spans on every call (sampled, batched, dropped) are measured beside it,
for information: their cost is the SDK's span machinery, which a sampler bounds.

Run alone: ``python -m benchmarks.otel`` (same as ``--scenarios otel``).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from .clients import eagle
from .common import Ctx
from .overhead import Group, measure_groups

#: the target of issue 14: calls/s with the adapter's metrics on / off
TARGET = 0.97

#: the groups that carry the target (the traces group is for information)
TARGET_GROUPS = ("sync, 1 thread: metrics", "asyncio, 16 concurrent: metrics")


def run_otel(ctx: Ctx) -> dict[str, Any]:
    quick = ctx.opts.quick
    # many short paired rounds: the median of per-round ratios resists the bursts of load
    # a shared machine has (a 3 % effect is smaller than one burst)
    rounds = 2 if quick else 13
    duration = 0.8 if quick else 1.2
    groups: list[Group] = [
        (TARGET_GROUPS[0], 1, [eagle("sync", otel="metrics"), eagle("sync")]),
        (TARGET_GROUPS[1], 16, [eagle("aio", otel="metrics"), eagle("aio")]),
    ]
    if not quick:
        groups.append(
            ("sync, 1 thread: metrics and traces", 1, [eagle("sync", otel="both"), eagle("sync")])
        )
    total = sum(len(g[2]) for g in groups) * rounds * (duration + 0.4) + 4
    ctx.stage("otel: unary calls/s, adapter on vs off", total)
    started = time.monotonic()
    out: dict[str, Any] = {"rounds": rounds, "duration": duration, "target": TARGET}
    out["groups"] = measure_groups(ctx, groups, rounds, duration, "otel")
    out["seconds"] = round(time.monotonic() - started, 1)
    ctx.end_stage()
    return out


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["--scenarios", "otel", *sys.argv[1:]]))
