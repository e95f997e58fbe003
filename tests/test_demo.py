"""`make demo` runs the real demo: it must notice each fault and end with all SERVING."""

from __future__ import annotations

import io
import json
import os

import eagle.ops.demo


def test_demo_notices_every_fault_and_recovers() -> None:
    out = io.StringIO()
    rc = eagle.ops.demo.main(["--phase", "2", "--threads", "2", "--json"], out=out)
    text = out.getvalue()
    summary = json.loads(text[text.rindex("\n{") :])
    assert rc == 0, text[-2000:]
    assert set(summary["noticed_after_s"]) == {"crash", "hang", "drain"}
    assert summary["all_serving_at_end"] is True
    assert summary["calls"] > 100
    # nothing left running: every server process the demo started is gone
    assert len(summary["server_pids"]) >= 3
    for pid in summary["server_pids"]:
        assert not os.path.exists(f"/proc/{pid}"), f"demo left server {pid} running"
