"""Ground truth for the etcd watch tests: what etcd itself says a key's history is, and
the check that a watch saw every acknowledged put of it exactly once, in order."""

from __future__ import annotations

from typing import Any

import grpc

from eagle.testing.etcd import watch


def etcd_history(endpoint: str, key: bytes, start: int, last: int) -> list[int]:
    """Every revision of ``key`` from ``start`` to ``last``, read with plain grpcio."""
    out: list[int] = []
    with grpc.insecure_channel(endpoint) as ch:
        call, events = watch(ch, key, start_revision=start, timeout=10)
        try:
            for ev in events:
                out.append(int(ev.kv.mod_revision))
                if out[-1] >= last:
                    break
        finally:
            call.cancel()
    return out


def assert_exactly_once(
    watcher: Any, acknowledged: list[int], truth_from: str, key: bytes, name: str = "watch"
) -> None:
    """``watcher`` (``.error``, ``.revisions``) ended cleanly and saw each revision once,
    in order, every ``acknowledged`` put among them, and exactly etcd's history."""
    assert watcher.error is None, f"{name}: {watcher.error!r}"
    revs = watcher.revisions
    assert revs == sorted(set(revs)), f"{name}: events duplicated or out of order"
    missing = set(acknowledged) - set(revs)
    assert not missing, f"{name}: {len(missing)} acknowledged puts never reached it"
    assert revs == etcd_history(truth_from, key, revs[0], revs[-1]), f"{name}: not etcd's history"
