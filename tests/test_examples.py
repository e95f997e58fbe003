"""The examples run as tests: the etcd Watch recipe survives a real partition."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from eagle.testing.etcd import etcd_unavailable_reason

ROOT = pathlib.Path(__file__).resolve().parent.parent
REASON = etcd_unavailable_reason()


@pytest.mark.etcd
@pytest.mark.skipif(REASON is not None, reason=f"etcd recipe needs the etcd harness: {REASON}")
def test_etcd_watch_recipe_demo() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "etcd_watch.py"), "--demo"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = re.search(r"(\d+) puts, (\d+) events, (\d+) missed, (\d+) duplicated", proc.stdout)
    assert m, proc.stdout
    puts, events, missed, dup = map(int, m.groups())
    assert puts > 20 and events == puts and missed == 0 and dup == 0
    assert "resumed on" in proc.stdout
