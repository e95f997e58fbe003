"""The real ``eagle`` console script against real servers: healthy, drained and frozen.

Each test runs the installed script (``<venv>/bin/eagle``, or ``python -m eagle.ops.cli`` when
the script is not installed next to the interpreter) in a subprocess and checks its
output, its JSON shape and its exit status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import eagle.ops.cli
from eagle.testing.cluster import LocalCluster
from eagle.testing.processes import find_tool

_SCRIPT = Path(sys.executable).with_name("eagle")
EAGLE = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "eagle.ops.cli"]

#: fast probes so every verdict is in within ~0.7 s
FAST_TOML = """\
[health]
interval = 0.2
timeout = 0.3
unhealthy_threshold = 2
"""

STATUS_KEYS = {
    "endpoint",
    "state",
    "health",
    "healthy",
    "latency_seconds",
    "consecutive_failures",
    "since_seconds",
    "last_error",
    "reason",
    "member_id",
    "leader",
    "term",
    "verdict",
    "times_ejected",
}


class Members:
    def __init__(self, cluster: LocalCluster, config: Path) -> None:
        self.cluster = cluster
        self.healthy, self.drained, self.frozen = cluster.endpoints
        self.config = str(config)

    @property
    def all(self) -> str:
        return f"{self.healthy},{self.drained},{self.frozen}"


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Members]:
    """m0 healthy, m1 drained (NOT_SERVING), m2 frozen (SIGSTOP)."""
    config = tmp_path_factory.mktemp("cli") / "fast.toml"
    config.write_text(FAST_TOML)
    with LocalCluster(3) as cluster:
        cluster.drain(1)
        cluster.stop(2)
        try:
            yield Members(cluster, config)
        finally:
            cluster.cont(2)


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("EAGLE_CONFIG", "EAGLE_ENDPOINTS")}
    full_env.update(env or {})
    return subprocess.run(
        [*EAGLE, *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def one_clean_line(text: str) -> str:
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# ------------------------------------------------------------------------- status
def test_status_table(members: Members) -> None:
    r = run("status", "--endpoints", members.all, "--config", members.config)
    assert r.returncode == 1, r.stderr  # the frozen member could not be reached
    lines = r.stdout.splitlines()
    border = lines[0]
    assert border.startswith("+-") and border.endswith("-+")
    assert lines[2] == border and lines[-1] == border
    assert [c.strip() for c in lines[1].strip("|").split("|")] == [
        "ENDPOINT",
        "STATE",
        "LATENCY",
        "ERROR",
    ]
    rows = {
        cells[0]: cells
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[3:-1])
    }
    assert list(rows) == [members.healthy, members.drained, members.frozen]
    assert rows[members.healthy][1] == "SERVING"
    assert rows[members.healthy][2].endswith("ms")
    assert rows[members.drained][1] == "NOT_SERVING"
    assert "NOT_SERVING" in rows[members.drained][3]
    assert rows[members.frozen][1] == "UNREACHABLE"
    assert "no answer" in rows[members.frozen][3]
    assert len({len(line) for line in lines}) == 1  # every row as wide as the borders
    line = one_clean_line(r.stderr)
    assert members.frozen in line and "unreachable" in line


def test_status_json_shape(members: Members) -> None:
    r = run("status", "--endpoints", members.all, "--config", members.config, "-w", "json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert set(doc) == {"endpoints", "serving", "total"}
    assert doc["serving"] == 1 and doc["total"] == 3
    by_ep = {row["endpoint"]: row for row in doc["endpoints"]}
    for row in doc["endpoints"]:
        assert set(row) == STATUS_KEYS
    assert by_ep[members.healthy]["state"] == "SERVING" and by_ep[members.healthy]["healthy"]
    assert isinstance(by_ep[members.healthy]["latency_seconds"], float)
    assert by_ep[members.drained]["state"] == "NOT_SERVING"
    frozen = by_ep[members.frozen]
    assert frozen["state"] == "UNREACHABLE" and frozen["healthy"] is False
    assert "DEADLINE_EXCEEDED" in frozen["last_error"]
    assert frozen["consecutive_failures"] >= 2


def test_status_healthy_only_exits_0(members: Members) -> None:
    r = run("status", "--endpoints", members.healthy, "--config", members.config)
    assert r.returncode == 0, r.stderr
    assert "SERVING" in r.stdout and r.stderr == ""


def test_status_membership_columns(members: Members) -> None:
    r = run(
        "status",
        "--endpoints",
        members.healthy,
        "--config",
        members.config,
        "--membership",
        "eagle",
        "--wait",
        "1",
    )
    header = [c.strip() for c in r.stdout.splitlines()[1].strip("|").split("|")]
    assert header == ["ENDPOINT", "STATE", "LATENCY", "MEMBER ID", "LEADER", "TERM", "ERROR"]


def test_status_watch_count(members: Members) -> None:
    r = run(
        "status",
        "--endpoints",
        f"{members.healthy},{members.drained}",
        "--config",
        members.config,
        "--watch",
        "--count",
        "2",
        "--interval",
        "0.2",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("--- ") == 2  # not a terminal: one stamped table per refresh
    assert r.stdout.count("| ENDPOINT") == 0 and r.stdout.count("ENDPOINT") == 2
    j = run(
        "status",
        "--endpoints",
        members.healthy,
        "--config",
        members.config,
        "--watch",
        "--count",
        "3",
        "--interval",
        "0.1",
        "-w",
        "json",
    )
    docs = [json.loads(line) for line in j.stdout.splitlines()]
    assert len(docs) == 3 and all(d["endpoints"][0]["state"] == "SERVING" for d in docs)


def test_watch_live_in_a_terminal(members: Members) -> None:
    """--watch redraws in place on a terminal and stops cleanly on Ctrl-C (SIGINT)."""
    tmux = find_tool("tmux")  # an absolute path, as the harnesses find their tools
    assert tmux is not None, "tmux is needed (.ci/run installs it: apt-get install tmux)"
    import time

    session = f"eagle-cli-{os.getpid()}"
    cmd = " ".join(
        [
            *EAGLE,
            "status",
            "--endpoints",
            members.healthy,
            "--config",
            members.config,
            "--watch",
            "--interval",
            "0.2",
            ";",
            "echo",
            "EXIT=$?",
            ";",
            "sleep",
            "30",
        ]
    )
    subprocess.run(
        [tmux, "new-session", "-d", "-s", session, "-x", "160", "-y", "20", cmd], check=True
    )
    try:

        def screen() -> str:
            return subprocess.run(
                [tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout

        deadline = time.monotonic() + 10
        while "SERVING" not in screen() and time.monotonic() < deadline:
            time.sleep(0.1)
        shown = screen()
        assert "Every 0.2s: eagle status" in shown and "SERVING" in shown
        assert shown.count("ENDPOINT") == 1  # redrawn in place, not appended
        subprocess.run([tmux, "send-keys", "-t", session, "C-c"], check=True)
        deadline = time.monotonic() + 10
        while "EXIT=" not in screen() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "EXIT=0" in screen()
        assert "Traceback" not in screen()
    finally:
        subprocess.run([tmux, "kill-session", "-t", session], capture_output=True)


# -------------------------------------------------------------------------- probe
def test_probe_exit_codes(members: Members) -> None:
    cfg = ("--config", members.config)
    assert run("probe", "--endpoints", members.healthy, *cfg).returncode == 0
    some = run("probe", "--endpoints", f"{members.healthy},{members.drained}", *cfg)
    assert some.returncode == 1
    assert f"{members.healthy} is healthy" in some.stdout
    assert f"{members.drained} is unhealthy: NOT_SERVING" in one_clean_line(some.stderr)
    none = run("probe", "--endpoints", f"{members.drained},{members.frozen}", *cfg)
    assert none.returncode == 2
    assert f"{members.frozen} is unhealthy: UNREACHABLE" in none.stderr
    assert none.stdout == ""


def test_probe_json(members: Members) -> None:
    r = run("probe", "--endpoints", members.all, "--config", members.config, "-w", "json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["healthy"] == 1 and doc["total"] == 3 and doc["exit_code"] == 1
    rows = {row["endpoint"]: row for row in doc["endpoints"]}
    assert set(rows[members.healthy]) == {
        "endpoint",
        "healthy",
        "state",
        "latency_seconds",
        "error",
    }
    assert rows[members.healthy]["healthy"] is True and rows[members.healthy]["error"] is None
    assert rows[members.frozen]["healthy"] is False
    assert rows[members.frozen]["state"] == "UNREACHABLE"


def test_probe_unreachable_endpoint() -> None:
    r = run("probe", "--endpoints", "127.0.0.1:1", "--wait", "3")
    assert r.returncode == 2
    line = one_clean_line(r.stderr)
    assert "127.0.0.1:1 is unhealthy: UNREACHABLE" in line
    assert "refused" in line.lower()


# --------------------------------------------------------------- config sources
def test_eagle_config_env(members: Members, tmp_path: Path) -> None:
    r = run("probe", "--endpoints", members.healthy, env={"EAGLE_CONFIG": members.config})
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"health": {"intervall": 1}}))
    r = run("probe", "--endpoints", members.healthy, env={"EAGLE_CONFIG": str(bad)})
    assert r.returncode == 2
    line = one_clean_line(r.stderr)
    assert "health.intervall: unknown config key" in line and "EAGLE_CONFIG" in line
    r = run("status", "--endpoints", members.healthy, "--config", str(bad))
    assert r.returncode == 2 and "health.intervall" in one_clean_line(r.stderr)


def test_endpoints_from_env(members: Members) -> None:
    r = run("probe", "--config", members.config, env={"EAGLE_ENDPOINTS": members.healthy})
    assert r.returncode == 0 and members.healthy in r.stdout


# ------------------------------------------------------------------ usage errors
USAGE_ERRORS = [
    (["status", "--endpoints", "127.0.0.1:1", "--bogus"], "unrecognized arguments: --bogus"),
    (["status", "--endpoints", "localhost"], "bad endpoint 'localhost': missing ':port'"),
    (["status", "--endpoints", "a:1,a:1"], "duplicate endpoint"),
    (["probe"], "no endpoints"),
    (["status", "--endpoints", "a:1", "-w", "yaml"], "invalid choice: 'yaml'"),
    (["status", "--endpoints", "a:1", "--interval", "-1"], "positive number"),
    (["status", "--endpoints", "a:1", "--count", "2"], "--count needs --watch"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["status", "--endpoints", "a:1", "--config", "x.yaml"], "must end in .json or .toml"),
    (["status", "--endpoints", "a:1", "--cert", "c.pem"], "give both --cert and --key"),
    (["status", "--endpoints", "a:1", "--cacert", "/nope.pem"], "cannot read"),
]


def test_usage_errors_from_the_real_script() -> None:
    """A few through the installed script: one line on stderr, exit status 2."""
    for args, needle in (USAGE_ERRORS[0], USAGE_ERRORS[1], USAGE_ERRORS[8]):
        r = run(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert needle in one_clean_line(r.stderr)
        assert r.stdout == ""


@pytest.mark.parametrize(("args", "needle"), USAGE_ERRORS)
def test_usage_errors_are_one_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert eagle.ops.cli.main(args) == 2
    out, err = capsys.readouterr()
    assert needle in one_clean_line(err)
    assert out == ""


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    r = run("--help")
    assert r.returncode == 0 and "examples:" in r.stdout
    for cmd in ("status", "probe", "demo", "bench"):
        assert cmd in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "eagle.ops.cli", "probe", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "--tls-server-name" in r.stdout and "examples:" in r.stdout
    for args in (["status", "--help"], ["demo", "--help"], ["bench", "--help"]):
        assert eagle.ops.cli.main(args) == 0
        assert "examples:" in capsys.readouterr().out
    assert eagle.ops.cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("eagle ")
    assert eagle.ops.cli.main([]) == 2  # no command: the help, exit status 2
    assert "usage: eagle" in capsys.readouterr().out


# ----------------------------------------------------------------- demo / bench
def test_demo_wraps_eagle_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    import eagle.ops.demo

    seen: list[list[str] | None] = []

    def fake_main(argv: list[str] | None = None) -> int:
        seen.append(argv)
        return 3

    monkeypatch.setattr(eagle.ops.demo, "main", fake_main)
    assert eagle.ops.cli.main(["demo", "--phase", "1", "--json"]) == 3
    assert eagle.ops.cli.main(["demo", "--", "--help"]) == 3
    assert seen == [["--phase", "1", "--json"], ["--help"]]


def test_bench_wraps_benchmarks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    calls: list[list[str]] = []

    def fake_call(cmd: list[str], env: dict[str, str]) -> int:
        calls.append(cmd)
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)
        return 0

    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__main__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(eagle.ops.cli.subprocess, "call", fake_call)
    assert eagle.ops.cli.main(["bench", "--quick"]) == 0
    assert calls == [[sys.executable, "-m", "benchmarks", "--quick"]]
    monkeypatch.setattr(eagle.ops.cli, "_bench_root", lambda: None)
    assert eagle.ops.cli.main(["bench"]) == 1
    err = capsys.readouterr().err
    assert "benchmarks package is not importable" in one_clean_line(err)
