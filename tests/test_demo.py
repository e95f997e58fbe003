"""`make demo` runs the real demo: it must notice each fault and end with all SERVING."""

from __future__ import annotations

import io
import json
import subprocess

import eagle.demo


def _server_pids() -> set[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in ps.stdout.splitlines() if "eagle.testing.server" in line}


def test_demo_notices_every_fault_and_recovers() -> None:
    before = _server_pids()
    out = io.StringIO()
    rc = eagle.demo.main(["--phase", "2", "--threads", "2", "--json"], out=out)
    text = out.getvalue()
    summary = json.loads(text[text.rindex("\n{") :])
    assert rc == 0, text[-2000:]
    assert set(summary["noticed_after_s"]) == {"crash", "hang", "drain"}
    assert summary["all_serving_at_end"] is True
    assert summary["calls"] > 100
    # nothing left running: no echo server process the demo started
    assert not (_server_pids() - before)
