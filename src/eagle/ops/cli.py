"""The ``eagle`` command: see what eagle sees, from a shell.

::

    eagle status --endpoints 10.0.0.1:2379,10.0.0.2:2379 [-w table|json] [--watch]
    eagle probe  --endpoints 10.0.0.1:2379,10.0.0.2:2379 [-w json]
    eagle demo   [demo options]
    eagle bench  [benchmark options]

``status`` and ``probe`` build a real eagle channel with the same config sources as the
library (``--config FILE``, else the ``EAGLE_CONFIG`` environment variable, else the
defaults), wait until every endpoint has been judged (bounded by the health timeouts),
and report the status table. Errors are one line on stderr; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn, TextIO

from .. import __version__
from .._sync.channel import Channel, insecure_channel, secure_channel
from ..config import Config, load_config
from ..core.balancer import FIRST_PROBE_TIMEOUT
from ..core.status import EndpointStatus, State, StatusSnapshot
from ..endpoints import parse_endpoints
from .tls import explain_tls_error, load_credentials

__all__ = ["main"]

log = logging.getLogger("eagle.ops.cli")

#: exit codes
EXIT_OK = 0
EXIT_SOME = 1
EXIT_USAGE = 2
EXIT_NONE = 2

_EPILOG = """\
commands:
  status   the status table: state, probe latency, leader/term, last error per endpoint
  probe    one-shot health check for scripts: exit 0 all healthy, 1 some, 2 none
  demo     eagle on an embedded local cluster under real faults (same as `make demo`)
  bench    the benchmarks (same as `make bench`; run it from the eagle checkout)

examples:
  eagle status --endpoints 10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379
  eagle status --endpoints a:2379,b:2379 --membership etcd -w json
  eagle status --endpoints a:2379,b:2379 --watch
  eagle probe --endpoints a:2379,b:2379 && echo all healthy
  eagle --config eagle.toml probe --endpoints a:2379 -w json
  eagle demo --phase 2
  eagle bench --quick

config: --config FILE (.json or .toml), else $EAGLE_CONFIG, else the defaults.
endpoints: --endpoints, else $EAGLE_ENDPOINTS.
"""

_STATUS_EPILOG = """\
Waits until every endpoint has been probed and judged (at most about
2 x health.timeout plus the probes the unhealthy threshold needs; see --wait),
then prints one row per endpoint. Exit status: 0 when every endpoint answered
its probes (whatever it answered), 1 when some could not be reached.

examples:
  eagle status --endpoints 127.0.0.1:2379,127.0.0.1:22379
  eagle status --endpoints 10.0.0.1:2379,10.0.0.2:2379 --membership etcd
  eagle status --endpoints a:443,b:443 --cacert ca.pem -w json
  eagle status --endpoints 10.0.0.1:443 --cacert ca.pem --cert me.pem --key me.key \\
      --tls-server-name etcd.internal
  eagle status --endpoints a:2379,b:2379 --watch --interval 0.5
  eagle status --endpoints a:2379,b:2379 --otel

--otel also prints what eagle's OpenTelemetry adapter (eagle.ops.otel) recorded
while the table was made, as an OpenTelemetry SDK reader collects it: the same
numbers your OTel pipeline gets, under the names it gets them (STATE is
eagle.endpoint.state, LATENCY the last eagle.probe.duration). Needs
opentelemetry-sdk.
"""

_PROBE_EPILOG = """\
One probe round, for scripts and readiness hooks. Exit status: 0 when every
endpoint is healthy (SERVING), 1 when some are, 2 when none are.

examples:
  eagle probe --endpoints 127.0.0.1:2379,127.0.0.1:22379
  eagle probe --endpoints a:2379,b:2379 -w json | jq .healthy
  until eagle probe --endpoints a:2379 >/dev/null; do sleep 1; done
"""

_DEMO_EPILOG = """\
Every argument after `demo` goes to the demo; `eagle demo -- --help` shows its own
options.

examples:
  eagle demo
  eagle demo --phase 2 --threads 2
"""

_BENCH_EPILOG = """\
Runs `python -m benchmarks` from the eagle source checkout (the benchmarks/ package
next to src/); every argument after `bench` goes to it. `eagle bench -- --help`
shows its own options.

examples:
  eagle bench --quick
"""


# --------------------------------------------------------------------- argparse
class _UsageError(Exception):
    """A bad flag or value: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: error: {message} (see '{self.prog} --help')")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _common(p: argparse.ArgumentParser, *, endpoints: bool) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="eagle config file (.json or .toml); default: $EAGLE_CONFIG, else the defaults",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log eagle's and grpc's own messages to stderr",
    )
    if not endpoints:
        return
    p.add_argument(
        "--endpoints",
        metavar="LIST",
        default=os.environ.get("EAGLE_ENDPOINTS"),
        help="comma-separated host:port, [v6]:port or unix:/path (default: $EAGLE_ENDPOINTS)",
    )
    p.add_argument(
        "-w",
        "--write-out",
        choices=("table", "json"),
        default="table",
        help="output format (default: table)",
    )
    p.add_argument(
        "--membership",
        choices=("etcd", "eagle", "none"),
        default=None,
        help="membership provider (overrides membership.provider of the config)",
    )
    p.add_argument(
        "--wait",
        type=_positive,
        metavar="S",
        default=None,
        help="how long to wait for the first verdicts (default: from the health config)",
    )
    tls = p.add_argument_group("TLS (like etcdctl)")
    tls.add_argument("--cacert", metavar="FILE", help="verify servers with this CA bundle (PEM)")
    tls.add_argument("--cert", metavar="FILE", help="client certificate for mutual TLS (PEM)")
    tls.add_argument("--key", metavar="FILE", help="client key for mutual TLS (PEM)")
    tls.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="verify every server's certificate for NAME (for endpoints given by IP)",
    )
    tls.add_argument(
        "--tls",
        action="store_true",
        help="use TLS with the system's CA roots (implied by --cacert/--cert)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``eagle`` argument parser (exposed for docs and tests)."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="eagle",
        description="eagle: see what eagle sees — health-aware gRPC channels over N endpoints.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"eagle {__version__}")
    _common(parser, endpoints=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    status = sub.add_parser(
        "status",
        help="show the status table",
        description="Show eagle's status table: one row per endpoint.",
        epilog=_STATUS_EPILOG,
        formatter_class=fmt,
    )
    _common(status, endpoints=True)
    status.add_argument("--watch", action="store_true", help="refresh live until Ctrl-C")
    status.add_argument(
        "--interval",
        type=_positive,
        metavar="S",
        default=1.0,
        help="--watch: seconds between refreshes (default 1; also on every state change)",
    )
    status.add_argument(
        "--count", type=_count, metavar="N", default=None, help="--watch: stop after N refreshes"
    )
    status.add_argument(
        "--otel",
        action="store_true",
        help="also show the OpenTelemetry series eagle recorded (needs opentelemetry-sdk)",
    )
    probe = sub.add_parser(
        "probe",
        help="one-shot health check (exit 0 all healthy, 1 some, 2 none)",
        description="Probe every endpoint once and report which are healthy.",
        epilog=_PROBE_EPILOG,
        formatter_class=fmt,
    )
    _common(probe, endpoints=True)
    demo = sub.add_parser(
        "demo",
        help="run the demo on an embedded local cluster",
        description="Run eagle's demo (eagle.ops.demo) on three local servers under real faults.",
        epilog=_DEMO_EPILOG,
        formatter_class=fmt,
    )
    _common(demo, endpoints=False)
    bench = sub.add_parser(
        "bench",
        help="run the benchmarks",
        description="Run eagle's benchmarks (python -m benchmarks).",
        epilog=_BENCH_EPILOG,
        formatter_class=fmt,
    )
    _common(bench, endpoints=False)
    return parser


# ---------------------------------------------------------------- channel setup
def _config(args: argparse.Namespace) -> Config:
    source = getattr(args, "config", None)
    try:
        cfg = load_config(source)
    except ValueError as exc:
        where = "" if source is not None else " (from EAGLE_CONFIG)"
        raise _UsageError(f"eagle: error: {exc}{where}") from None
    data = cfg.to_dict()
    if args.membership is not None:
        data["membership"] = dict(data.get("membership") or {})
        data["membership"]["provider"] = None if args.membership == "none" else args.membership
    # the CLI shows the members live and makes no calls of its own: probe at
    # health.interval all the time, not at the slower no-traffic interval
    data["health"] = {**data["health"], "no_traffic_interval": None}
    return Config.from_dict(data)


def _channel(args: argparse.Namespace, cfg: Config) -> Channel:
    if not args.endpoints:
        raise _UsageError(
            f"eagle {args.command}: error: no endpoints: give --endpoints a:2379,b:2379 "
            "or set EAGLE_ENDPOINTS"
        )
    try:
        endpoints = parse_endpoints(args.endpoints)
    except ValueError as exc:
        raise _UsageError(f"eagle {args.command}: error: {exc}") from None
    keys = [ep.raw for ep in endpoints]
    if not _is_tls(args):
        return insecure_channel(keys, config=cfg)
    try:
        creds = load_credentials(args.cacert, args.cert, args.key)
    except ValueError as exc:
        raise _UsageError(f"eagle {args.command}: error: {exc}") from None
    authorities = {k: args.tls_server_name for k in keys} if args.tls_server_name else None
    return secure_channel(keys, creds, config=cfg, authorities=authorities)


def settle_time(cfg: Config) -> float:
    """How long ``status``/``probe`` wait at most for every endpoint's first verdict:
    the first probe (which also connects, so it may wait up to FIRST_PROBE_TIMEOUT), then
    the further probes the unhealthy threshold needs, plus the membership timeout when
    membership is on, plus a small margin."""
    h = cfg.health
    first = max(h.timeout, FIRST_PROBE_TIMEOUT)
    later = max(h.interval * (1 + h.jitter), h.timeout)
    wait = first + (h.unhealthy_threshold - 1) * later
    if cfg.membership.provider is not None:
        wait += cfg.membership.timeout
    return wait + 0.5


def _settled(st: EndpointStatus, membership: bool) -> bool:
    if st.state is State.UNKNOWN:
        return False
    if membership and st.state is State.SERVING:
        return st.member_id is not None or st.verdict is not None or st.last_error is not None
    return True


def _settle(ch: Channel, cfg: Config, wait: float | None) -> StatusSnapshot:
    """Wait (bounded) until every endpoint has left UNKNOWN; return the table."""
    membership = cfg.membership.provider is not None
    deadline = time.monotonic() + (settle_time(cfg) if wait is None else wait)
    while True:
        snap = ch.status()
        left = deadline - time.monotonic()
        if left <= 0 or all(_settled(st, membership) for st in snap.values()):
            return snap
        ch.wait_for_change(snap.version, min(left, 0.05))


# ------------------------------------------------------------------- rendering
def short_error(st: EndpointStatus, tls: bool) -> str:
    """The last error in few words: a TLS reason when recognised, else grpc's text
    without its ``failed to connect to all addresses; last error: CODE: addr:`` prefix."""
    text = st.last_error
    if not text:
        return ""
    if st.state is State.SERVING:
        return ""
    reason = explain_tls_error(text, tls)
    if reason is not None:
        return reason
    if text.startswith("probe DEADLINE_EXCEEDED"):
        return "no answer to the health probe in time (frozen or overloaded?)"
    if "last error: " in text:
        tail = text.rsplit("last error: ", 1)[1]
        parts = tail.split(": ")
        # drop "CODE" and "ipv4:1.2.3.4:5" prefixes
        while len(parts) > 1 and (parts[0].isupper() or parts[0].startswith(("ipv4:", "ipv6:"))):
            parts.pop(0)
        text = ": ".join(parts)
        return text
    return text


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1.0:
        return f"{seconds * 1000:.1f}ms"
    return f"{seconds:.2f}s"


def _row_json(st: EndpointStatus, tls: bool, now: float) -> dict[str, Any]:
    return {
        "endpoint": st.endpoint,
        "state": st.state.value,
        "health": st.health.value,
        "healthy": st.state is State.SERVING,
        "latency_seconds": st.last_latency,
        "consecutive_failures": st.consecutive_failures,
        "since_seconds": round(max(0.0, now - st.since), 3),
        "last_error": st.last_error,
        "reason": short_error(st, tls) or None,
        "member_id": st.member_id,
        "leader": st.leader,
        "term": st.term,
        "verdict": st.verdict,
        "times_ejected": st.times_ejected,
    }


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A table like ``etcdctl -w table``: ``+---+`` borders, centred headers."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    head = "|".join(f" {h.center(w)} " for h, w in zip(headers, widths, strict=True))
    out = [line, f"|{head}|", line]
    for row in rows:
        cells = "|".join(f" {c.ljust(w)} " for c, w in zip(row, widths, strict=True))
        out.append(f"|{cells}|")
    out.append(line)
    return "\n".join(out)


def status_table(snap: StatusSnapshot, *, membership: bool, tls: bool) -> str:
    """The status table as text."""
    headers = ["ENDPOINT", "STATE", "LATENCY"]
    if membership:
        headers += ["MEMBER ID", "LEADER", "TERM"]
    headers.append("ERROR")
    rows = []
    for st in snap.values():
        answered = st.state is not State.UNREACHABLE and st.state is not State.UNKNOWN
        row = [st.endpoint, st.state.value, _latency(st.last_latency if answered else None)]
        if membership:
            row += [
                st.member_id or "-",
                st.leader or "-",
                "-" if st.term is None else str(st.term),
            ]
        row.append(
            short_error(st, tls) or (st.verdict or "" if st.state is State.PARTITIONED else "")
        )
        rows.append([c or "" for c in row])
    return render_table(headers, rows)


def _complain(snap: StatusSnapshot, tls: bool, err: TextIO) -> None:
    """One line on stderr per endpoint that could not be reached."""
    for st in snap.values():
        if st.state is State.UNREACHABLE:
            print(f"eagle: {st.endpoint} is unreachable: {short_error(st, tls)}", file=err)
        elif st.state is State.UNKNOWN:
            why = short_error(st, tls) or "no answer yet"
            print(f"eagle: {st.endpoint} was not judged in time: {why}", file=err)


# -------------------------------------------------------------------- commands
def _is_tls(args: argparse.Namespace) -> bool:
    return bool(args.tls or args.cacert or args.cert or args.key or args.tls_server_name)


class _OtelView:
    """``status --otel``: eagle's OpenTelemetry adapter on the CLI's channel, read by an
    in-memory OpenTelemetry SDK reader (what a real pipeline's reader collects)."""

    #: the ``grpc.target`` of every series the CLI shows
    NAME = "eagle-status"

    def __init__(self, ch: Channel) -> None:
        try:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        except ImportError:
            raise _UsageError(
                "eagle status: error: --otel needs the OpenTelemetry SDK: "
                "pip install 'eagle-grpc[otel]' opentelemetry-sdk"
            ) from None
        from .otel import OtelMetrics

        self._reader = InMemoryMetricReader()
        self._provider = MeterProvider(metric_readers=[self._reader])
        self._stop = OtelMetrics(self._provider).instrument(ch, self.NAME)

    def points(self) -> list[dict[str, Any]]:
        """Every data point now: name, attributes, and value or count and sum."""
        from opentelemetry.sdk.metrics.export import HistogramDataPoint

        data = self._reader.get_metrics_data()
        out: list[dict[str, Any]] = []
        for rm in data.resource_metrics if data is not None else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for dp in m.data.data_points:
                        attrs = dict(dp.attributes or {})
                        row: dict[str, Any] = {"name": m.name, "attributes": attrs}
                        if isinstance(dp, HistogramDataPoint):
                            row.update(count=dp.count, sum=dp.sum)
                        else:
                            row["value"] = getattr(dp, "value", None)
                        out.append(row)
        return out

    def probed(self, endpoints: Sequence[str]) -> bool:
        """True once a probe of every endpoint was recorded."""
        seen = {
            p["attributes"].get("eagle.endpoint")
            for p in self.points()
            if p["name"] == "eagle.probes"
        }
        return all(ep in seen for ep in endpoints)

    def close(self) -> None:
        self._stop()
        self._provider.shutdown()

    @staticmethod
    def render(points: list[dict[str, Any]]) -> str:
        """One line per series, ``name{attr="value",...} value`` (histograms: count and
        sum); the state gauge only where it is 1."""
        lines = []
        for p in points:
            if p["name"] == "eagle.endpoint.state" and not p.get("value"):
                continue
            attrs = ",".join(f'{k}="{v}"' for k, v in p["attributes"].items())
            hist = "count" in p
            value = f"count={p['count']} sum={p['sum']:.6g}" if hist else f"{p['value']:g}"
            lines.append(f"{p['name']}{{{attrs}}} {value}")
        return "\n".join(sorted(lines))


def _cmd_status(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    cfg = _config(args)
    membership = cfg.membership.provider is not None
    tls = _is_tls(args)
    as_json = args.write_out == "json"
    if args.otel and args.watch:
        raise _UsageError("eagle status: error: --otel does not go with --watch")
    with _channel(args, cfg) as ch:
        view = _OtelView(ch) if args.otel else None
        started = time.monotonic()
        snap = _settle(ch, cfg, args.wait)
        if view is not None:
            # the channel probed before the view was attached: wait (within the same
            # bound) until the view saw a probe of every endpoint too
            limit = started + (settle_time(cfg) if args.wait is None else args.wait)
            while not view.probed(list(snap)) and time.monotonic() < limit:
                ch.wait_for_change(snap.version, 0.05)
            snap = ch.status()
        if not args.watch:
            points = [] if view is None else view.points()
            if view is not None:
                view.close()
            if as_json:
                now = time.monotonic()
                doc: dict[str, Any] = {
                    "endpoints": [_row_json(st, tls, now) for st in snap.values()],
                    "serving": sum(st.serving for st in snap.values()),
                    "total": len(snap),
                }
                if view is not None:
                    doc["otel"] = points
                print(json.dumps(doc, indent=2), file=out)
            else:
                print(status_table(snap, membership=membership, tls=tls), file=out)
                if view is not None:
                    print(
                        "\nOpenTelemetry (eagle.ops.otel, as an SDK reader collects it):", file=out
                    )
                    print(_OtelView.render(points), file=out)
            _complain(snap, tls, err)
            answered = all(
                st.state not in (State.UNREACHABLE, State.UNKNOWN) for st in snap.values()
            )
            return EXIT_OK if answered else EXIT_SOME
        return _watch(ch, args, membership, tls, out)


def _watch(ch: Channel, args: argparse.Namespace, membership: bool, tls: bool, out: TextIO) -> int:
    tty = out.isatty() and args.write_out == "table"
    shown = 0
    try:
        while True:
            snap = ch.status()
            now = time.monotonic()
            if args.write_out == "json":
                doc = {
                    "time": time.time(),
                    "endpoints": [_row_json(st, tls, now) for st in snap.values()],
                    "serving": sum(st.serving for st in snap.values()),
                    "total": len(snap),
                }
                print(json.dumps(doc), file=out, flush=True)
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                head = f"Every {args.interval:g}s: eagle status ({len(snap)} endpoints)  {stamp}"
                text = status_table(snap, membership=membership, tls=tls)
                if tty:
                    out.write("\x1b[H\x1b[2J" + head + "\n\n" + text + "\n")
                    out.flush()
                else:
                    print(f"--- {stamp}\n{text}", file=out, flush=True)
            shown += 1
            if args.count is not None and shown >= args.count:
                return EXIT_OK
            ch.wait_for_change(snap.version, args.interval)
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
        return EXIT_OK


def _cmd_probe(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    cfg = _config(args)
    tls = _is_tls(args)
    with _channel(args, cfg) as ch:
        snap = _settle(ch, cfg, args.wait)
    healthy = [st for st in snap.values() if st.serving]
    code = EXIT_OK if len(healthy) == len(snap) else EXIT_SOME if healthy else EXIT_NONE
    if args.write_out == "json":
        doc = {
            "healthy": len(healthy),
            "total": len(snap),
            "exit_code": code,
            "endpoints": [
                {
                    "endpoint": st.endpoint,
                    "healthy": st.serving,
                    "state": st.state.value,
                    "latency_seconds": st.last_latency,
                    "error": None if st.serving else (short_error(st, tls) or None),
                }
                for st in snap.values()
            ],
        }
        print(json.dumps(doc, indent=2), file=out)
        return code
    for st in snap.values():
        if st.serving:
            print(f"{st.endpoint} is healthy: probe took {_latency(st.last_latency)}", file=out)
        else:
            why = short_error(st, tls) or ("no answer yet" if st.state is State.UNKNOWN else "")
            line = f"{st.endpoint} is unhealthy: {st.state.value}" + (f": {why}" if why else "")
            print(line, file=err)  # as etcdctl endpoint health: the unhealthy go to stderr
    return code


def _cmd_demo(rest: list[str], err: TextIO) -> int:
    try:
        from . import demo
    except ImportError as exc:
        print(f"eagle demo: error: the demo is not available: {exc}", file=err)
        return EXIT_SOME
    try:
        return int(demo.main(rest) or 0)
    except KeyboardInterrupt:
        return 130


def _bench_root() -> Path | None:
    here = Path(__file__).resolve().parents[2]
    for root in (Path.cwd(), here):
        if (root / "benchmarks" / "__main__.py").is_file():
            return root
    return None


def _cmd_bench(rest: list[str], err: TextIO) -> int:
    root = _bench_root()
    if root is None:
        print(
            "eagle bench: error: the benchmarks package is not importable: run it from the "
            "eagle source checkout (the directory that holds benchmarks/)",
            file=err,
        )
        return EXIT_SOME
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    try:
        return subprocess.call([sys.executable, "-m", "benchmarks", *rest], env=env)
    except KeyboardInterrupt:
        return 130


# ------------------------------------------------------------------------ main
@contextlib.contextmanager
def _quiet_grpc_core(enabled: bool) -> Iterator[None]:
    """Keep grpc's C-core log lines (e.g. one per failed TLS handshake) off the terminal.

    grpc reads ``GRPC_VERBOSITY`` only when it is imported, which is before ``main``
    runs, so instead file descriptor 2 goes to /dev/null while Python's ``sys.stderr``
    keeps writing to the real stderr. Off with ``--debug``, when ``GRPC_VERBOSITY`` is
    set, or when ``sys.stderr`` is not the process's own (tests capturing it).
    """
    if not enabled or "GRPC_VERBOSITY" in os.environ or sys.stderr is not sys.__stderr__:
        yield
        return
    try:
        sys.__stderr__.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    real: IO[str] = open(  # noqa: SIM115 (closed below)
        saved, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    original = sys.stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = real
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            real.flush()
        sys.stderr = original
        os.dup2(saved, 2)
        os.close(saved)
        real.close()


def _setup_logging(debug: bool, err: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if debug:
        root.setLevel(logging.DEBUG)
    else:
        handler.setLevel(logging.ERROR)
        # APScheduler warns about every skipped tick; eagle's own logs stay quiet too
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
    return handler


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """For ``demo``/``bench``: the arguments after the command go to the wrapped program,
    except our own ``--config FILE``/``--debug`` right after it, a lone ``-h``/``--help``
    (ours), and a ``--`` separator (everything after it is passed on)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--config" else 1
    if i >= len(argv) or argv[i] not in ("demo", "bench"):
        return argv, []
    head, rest = argv[: i + 1], argv[i + 1 :]
    while rest and (rest[0] in ("--config", "--debug") or rest[0].startswith("--config=")):
        take = 2 if rest[0] == "--config" else 1
        head, rest = head + rest[:take], rest[take:]
    if rest[:1] == ["--"]:
        return head, rest[1:]
    if rest in (["-h"], ["--help"]):
        return head + rest, []
    return head, rest


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``eagle`` command with ``argv`` (default: ``sys.argv[1:]``); returns the
    exit status. Never raises for user errors: they are one line on stderr."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parse_args, rest = _split_passthrough(args_list)
    err: TextIO = sys.stderr
    try:
        args = build_parser().parse_args(parse_args)
    except _UsageError as exc:
        print(exc, file=err)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    if args.command is None:
        build_parser().print_help(sys.stdout)
        return EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    with _quiet_grpc_core(not debug):
        err = sys.stderr
        handler = _setup_logging(debug, err)
        try:
            return _run(args, rest, sys.stdout, err)
        except _UsageError as exc:
            print(exc, file=err)
            return EXIT_USAGE
        except KeyboardInterrupt:
            return 130
        except Exception as exc:  # a bug or an environment problem: still one line
            if debug:
                log.exception("eagle %s failed", args.command)
            print(f"eagle {args.command}: error: {type(exc).__name__}: {exc}", file=err)
            return EXIT_SOME
        finally:
            logging.getLogger().removeHandler(handler)


def _run(args: argparse.Namespace, rest: list[str], out: TextIO, err: TextIO) -> int:
    if args.command == "status":
        if not args.watch and args.count is not None:
            raise _UsageError("eagle status: error: --count needs --watch")
        return _cmd_status(args, out, err)
    if args.command == "probe":
        return _cmd_probe(args, out, err)
    if args.command == "demo":
        if getattr(args, "config", None):
            os.environ["EAGLE_CONFIG"] = args.config
        return _cmd_demo(rest, err)
    if getattr(args, "config", None):
        os.environ["EAGLE_CONFIG"] = args.config
    return _cmd_bench(rest, err)


if __name__ == "__main__":
    sys.exit(main())
