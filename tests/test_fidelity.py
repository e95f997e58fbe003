"""Fidelity: what an application can observe is the same on eagle as on plain grpc.

Each test runs one scenario twice, on a plain grpc channel to one member (the control)
and on an eagle channel, records everything the application can see (exception class,
code, details, metadata, Future/Call methods, callbacks, interceptor arguments) and
compares the two records field by field. A failure lists every differing field with
grpc's value and eagle's value side by side.

The eagle channel comes in three variants: one endpoint, three endpoints, and three
endpoints with ``{"retry": {"mode": "off"}}``.

grpc's behaviour is what grpcio (1.85) really does here, found by running it, e.g.:

* server status: sync errors are ``grpc._channel._InactiveRpcError`` for blocking and
  ``with_call`` calls and the ``_MultiThreadedRendezvous`` itself for futures and
  streams; aio errors are ``grpc.aio.AioRpcError``; code, details and both metadata
  arrive unchanged, ``debug_error_string()`` is non-empty;
* local cancel: code CANCELLED, details ``"Locally cancelled by application!"``;
  a cancelled sync future raises ``grpc.FutureCancelledError`` from ``result()``,
  ``exception()`` and ``traceback()``; a cancelled aio stream's ``read()`` raises
  ``asyncio.CancelledError``;
* deadline: code DEADLINE_EXCEEDED, details ``"Deadline Exceeded"``;
* a call on a closed channel: sync ``ValueError`` (``"Cannot invoke RPC on closed
  channel!"`` from unary-unary and stream-unary calls, ``"Cannot invoke RPC: Channel
  closed!"`` from ``future()`` and the response-streaming kinds); aio
  ``grpc.aio.UsageError("Channel is closed.")`` raised when the call object is made.

One grpc race is avoided rather than compared: a grpc.aio *server-streaming* call whose
server sends initial metadata and then fails at once sometimes (about 1 in 10 on a new
channel) reports empty initial metadata. Where aio initial metadata before a failure is
compared, the client reads a response first, so grpc is deterministic.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from _support import FAST, wait_until

import eagle
import eagle.aio
from eagle.testing.cluster import LOCAL_CHANNEL_OPTIONS, LocalCluster
from eagle.testing.interop import empty_pb2, messages_pb2, test_pb2_grpc
from eagle.testing.interop_cases import SPECIAL_STATUS_MESSAGE
from eagle.testing.interop_service import ECHO_INITIAL_KEY, ECHO_TRAILING_KEY
from eagle.testing.v1 import echo_pb2, echo_pb2_grpc

pytestmark = pytest.mark.timeout(60)

#: seconds any single aio wait may take before it counts as a hang (grpc needs
#: milliseconds); after one hang the rest of that side's waits get :data:`AFTER_HANG`
BOUND = 2.0
AFTER_HANG = 0.2
#: deadline of the calls that are expected to end on their own
T = 10.0
#: metadata the interop server echoes: initial and trailing
MD = ((ECHO_INITIAL_KEY, "initial-value"), (ECHO_TRAILING_KEY, b"\xab\xab\xab"))
HANG = "HANG: did not settle within BOUND seconds"
LOCAL = list(LOCAL_CHANNEL_OPTIONS)


@dataclass(frozen=True)
class Variant:
    """How the eagle side is built."""

    name: str
    members: int
    config: dict[str, Any]


VARIANTS = [
    Variant("one-endpoint", 1, dict(FAST)),
    Variant("three-endpoints", 3, dict(FAST)),
    Variant("three-endpoints-retry-off", 3, {**FAST, "retry": {"mode": "off"}}),
]


@pytest.fixture(params=VARIANTS, ids=[v.name for v in VARIANTS])
def variant(request: pytest.FixtureRequest) -> Variant:
    v: Variant = request.param
    return v


# ------------------------------------------------------------------ comparing


class Diff:
    """Collects grpc-vs-eagle differences; :meth:`check` fails listing all of them."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[str] = []

    def eq(self, what: str, grpc_value: object, eagle_value: object) -> None:
        """Record a difference unless the two values are equal."""
        if not _same(grpc_value, eagle_value):
            self.rows.append(f"  {what}:\n    grpc : {grpc_value!r}\n    eagle: {eagle_value!r}")

    def compare(self, grpc_obs: dict[str, Any], eagle_obs: dict[str, Any], where: str = "") -> None:
        """Compare two observation records field by field (nested dicts recurse)."""
        for key in [*grpc_obs, *(k for k in eagle_obs if k not in grpc_obs)]:
            g = grpc_obs.get(key, "<not observed>")
            e = eagle_obs.get(key, "<not observed>")
            name = f"{where}{key}"
            if isinstance(g, dict) and isinstance(e, dict):
                self.compare(g, e, f"{name} / ")
            else:
                self.eq(name, g, e)

    def check(self) -> None:
        """Fail the test if any difference was recorded."""
        if self.rows:
            pytest.fail(
                f"{self.title}: eagle differs from grpc in {len(self.rows)} field(s)\n"
                + "\n".join(self.rows),
                pytrace=False,
            )


def _same(a: object, b: object) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return a is b


def md(metadata: Any) -> Any:
    """Metadata as the application sees it: container type and (item type, key, value)."""
    if metadata is None or isinstance(metadata, str):
        return metadata
    try:
        return (type(metadata).__name__, tuple((type(i).__name__, i[0], i[1]) for i in metadata))
    except Exception as exc:  # not iterable as metadata: show what it was
        return f"<not metadata: {metadata!r} ({exc!r})>"


def kind_of(err: object) -> object:
    """The type an application can rely on. A failed grpc future or stream *is* its error
    (a ``grpc.RpcError`` that is also a ``grpc.Call`` and ``grpc.Future``, raised as itself);
    grpc's class for it is private, so such call objects compare by that contract. Every
    other error compares by its exact type."""
    if (
        isinstance(err, grpc.RpcError)
        and isinstance(err, grpc.Call)
        and isinstance(err, grpc.Future)
        and not isinstance(err, grpc._channel._InactiveRpcError)
    ):
        return "call object (grpc.RpcError, grpc.Call, grpc.Future)"
    return type(err)


def _name(err: object) -> str:
    kind = kind_of(err)
    if isinstance(kind, str):
        return kind
    return f"{type(err).__module__}.{type(err).__qualname__}"


def err_obs(err: object) -> dict[str, Any]:
    """What an application can read from a raised (or returned) error."""
    if not isinstance(err, BaseException):
        return {"outcome": f"no exception; got {err!r}"[:300]}
    out: dict[str, Any] = {
        "exception type": kind_of(err),
        "is grpc.RpcError": isinstance(err, grpc.RpcError),
        "is grpc.Call": isinstance(err, grpc.Call),
    }
    if not hasattr(err, "code"):
        out["str"] = str(err)
        return out
    try:
        out["code()"] = err.code()
        out["details()"] = err.details()
        out["initial_metadata()"] = md(err.initial_metadata())
        out["trailing_metadata()"] = md(err.trailing_metadata())
        des = err.debug_error_string() if hasattr(err, "debug_error_string") else None
        out["debug_error_string() is a non-empty str"] = isinstance(des, str) and bool(des)
    except Exception as exc:
        out["reading the error raised"] = repr(exc)
    return out


def catch(fn: Callable[[], Any]) -> object:
    """The exception ``fn`` raises, or what it returned."""
    try:
        return fn()
    except Exception as exc:
        return exc


def outcome(fn: Callable[[], Any]) -> str:
    """``returned <value>`` or ``raised <ExceptionType>`` (for Future methods)."""
    try:
        value = fn()
    except BaseException as exc:
        return f"raised {_name(exc)}"
    if isinstance(value, BaseException):
        return f"returned exception {_name(value)}"
    return f"returned {type(value).__qualname__}" if value is not None else "returned None"


class _Waits:
    """Whether the side being observed has already hung once (see :data:`BOUND`)."""

    hung = False


def _limit() -> float:
    return AFTER_HANG if _Waits.hung else BOUND


async def _wait(aw: Awaitable[Any]) -> Any:
    try:
        return await asyncio.wait_for(aw, _limit())
    except TimeoutError:
        _Waits.hung = True
        raise


async def observe(scenario: Callable[[Any], Awaitable[Any]], ch: Any) -> Any:
    """Run one side's aio scenario with a fresh hang budget."""
    _Waits.hung = False
    return await scenario(ch)


async def bounded(aw: Awaitable[Any]) -> Any:
    """Await with the wait bound; a hang becomes the value :data:`HANG`."""
    try:
        return await _wait(aw)
    except TimeoutError:
        return HANG


async def aoutcome(aw: Awaitable[Any]) -> str:
    """``returned <type>``, ``raised <type>`` or HANG, bounded."""
    try:
        value = await _wait(aw)
    except TimeoutError:
        return HANG
    except BaseException as exc:
        return f"raised {type(exc).__module__}.{type(exc).__qualname__}"
    if value is grpc.aio.EOF:
        return "returned grpc.aio.EOF"
    return f"returned {type(value).__qualname__}"


async def acatch(aw: Awaitable[Any]) -> object:
    """The exception awaiting ``aw`` raises (or what it returned), bounded."""
    try:
        return await _wait(aw)
    except TimeoutError:
        return HANG
    except Exception as exc:
        return exc


# ------------------------------------------------------------------- channels


def grpc_channel(cluster: LocalCluster) -> grpc.Channel:
    return grpc.insecure_channel(cluster.endpoints[0], options=LOCAL)


def eagle_channel(cluster: LocalCluster, v: Variant) -> Any:
    return eagle.insecure_channel(cluster.endpoints[: v.members], config=v.config)


def grpc_aio_channel(cluster: LocalCluster, **kw: Any) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(cluster.endpoints[0], options=LOCAL, **kw)


def eagle_aio_channel(cluster: LocalCluster, v: Variant, **kw: Any) -> Any:
    return eagle.aio.insecure_channel(cluster.endpoints[: v.members], config=v.config, **kw)


def side_by_side(
    cluster: LocalCluster, v: Variant, scenario: Callable[[Any], dict[str, Any]], title: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a sync scenario on grpc and on eagle; fail on any difference."""
    with grpc_channel(cluster) as ch:
        g = scenario(ch)
    with eagle_channel(cluster, v) as ch:
        e = scenario(ch)
    diff = Diff(title)
    diff.compare(g, e)
    diff.check()
    return g, e


def aio_side_by_side(
    cluster: LocalCluster,
    v: Variant,
    scenario: Callable[[Any], Awaitable[dict[str, Any]]],
    title: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run an aio scenario on grpc.aio and on eagle.aio; fail on any difference."""

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        async with grpc_aio_channel(cluster) as ch:
            g = await observe(scenario, ch)
        async with eagle_aio_channel(cluster, v) as ch:
            e = await observe(scenario, ch)
        return g, e

    g, e = asyncio.run(both())
    diff = Diff(title)
    diff.compare(g, e)
    diff.check()
    return g, e


def _stub(ch: Any) -> Any:
    return test_pb2_grpc.TestServiceStub(ch)


def _echo(ch: Any) -> Any:
    return echo_pb2_grpc.EchoStub(ch)


def _echo_calls(cluster: LocalCluster) -> int:
    """Echo data calls the members have received so far."""
    return sum(cluster.stats(i).calls for i in range(len(cluster.members)))


# ----------------------------------------------------- 1, 2: server status


STATUSES = [
    (grpc.StatusCode.UNKNOWN, "test status message"),
    (grpc.StatusCode.INVALID_ARGUMENT, "invalid argument: bad field"),
    (grpc.StatusCode.UNKNOWN, SPECIAL_STATUS_MESSAGE),
]
STATUS_IDS = ["unknown", "invalid-argument", "special-message"]


def _status(code: grpc.StatusCode, message: str) -> messages_pb2.EchoStatus:
    return messages_pb2.EchoStatus(code=code.value[0], message=message)


def _unary_status(code: grpc.StatusCode, message: str) -> messages_pb2.SimpleRequest:
    return messages_pb2.SimpleRequest(response_size=1, response_status=_status(code, message))


def _stream_status(code: grpc.StatusCode, message: str) -> messages_pb2.StreamingOutputCallRequest:
    return messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=1)],
        response_status=_status(code, message),
    )


def _one_response() -> messages_pb2.StreamingOutputCallRequest:
    return messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=3)]
    )


def _sync_status_scenario(code: grpc.StatusCode, message: str) -> Callable[[Any], dict[str, Any]]:
    def scenario(ch: Any) -> dict[str, Any]:
        stub = _stub(ch)
        out: dict[str, Any] = {}
        out["blocking call"] = err_obs(
            catch(lambda: stub.UnaryCall(_unary_status(code, message), metadata=MD, timeout=T))
        )
        out["with_call"] = err_obs(
            catch(
                lambda: stub.UnaryCall.with_call(
                    _unary_status(code, message), metadata=MD, timeout=T
                )
            )
        )
        fut = stub.UnaryCall.future(_unary_status(code, message), metadata=MD, timeout=T)
        raised = catch(lambda: fut.result(timeout=T))
        out["future.result() raises"] = {**err_obs(raised), "it is the future": raised is fut}
        exc = fut.exception(timeout=T)
        out["future.exception()"] = {**err_obs(exc), "it is the future": exc is fut}
        out["future"] = {
            "code()": fut.code(),
            "details()": fut.details(),
            "initial_metadata()": md(fut.initial_metadata()),
            "trailing_metadata()": md(fut.trailing_metadata()),
            "done()": fut.done(),
            "cancelled()": fut.cancelled(),
            "running()": fut.running(),
            "traceback()": outcome(lambda: fut.traceback(timeout=T)),
        }
        responses = stub.StreamingOutputCall(_stream_status(code, message), metadata=MD, timeout=T)
        raised = catch(lambda: list(responses))
        out["server stream iteration raises"] = {
            **err_obs(raised),
            "it is the call": raised is responses,
        }
        responses = stub.FullDuplexCall(
            iter([_stream_status(code, message)]), metadata=MD, timeout=T
        )
        raised = catch(lambda: list(responses))
        out["bidi iteration raises"] = {**err_obs(raised), "it is the call": raised is responses}
        fail = echo_pb2.EchoRequest(message="x", fail_code=code.value[0])
        out["client stream raises"] = err_obs(
            catch(lambda: _echo(ch).ClientStream(iter([fail]), timeout=T))
        )
        out["client stream future.exception()"] = err_obs(
            _echo(ch).ClientStream.future(iter([fail]), timeout=T).exception(timeout=T)
        )
        return out

    return scenario


@pytest.mark.parametrize(("code", "message"), STATUSES, ids=STATUS_IDS)
def test_sync_server_status_reaches_the_caller_unchanged(
    shared_cluster: LocalCluster, variant: Variant, code: grpc.StatusCode, message: str
) -> None:
    g, _ = side_by_side(
        shared_cluster, variant, _sync_status_scenario(code, message), "sync server status"
    )
    # the scenario really produced the status (guards against a scenario that cannot fail)
    assert g["blocking call"]["code()"] is code and g["blocking call"]["details()"] == message


def _aio_status_scenario(
    code: grpc.StatusCode, message: str
) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    async def scenario(ch: Any) -> dict[str, Any]:
        stub = _stub(ch)
        out: dict[str, Any] = {}
        call = stub.UnaryCall(_unary_status(code, message), metadata=MD, timeout=T)
        out["await unary raises"] = err_obs(await acatch(call))
        out["unary call"] = {
            "code()": await bounded(call.code()),
            "details()": await bounded(call.details()),
            "initial_metadata()": md(await bounded(call.initial_metadata())),
            "trailing_metadata()": md(await bounded(call.trailing_metadata())),
            "done()": call.done(),
            "cancelled()": call.cancelled(),
        }
        responses = stub.StreamingOutputCall(_stream_status(code, message), metadata=MD, timeout=T)

        async def drain(call: Any) -> list[Any]:
            return [r async for r in call]

        err = err_obs(await acatch(drain(responses)))
        err.pop("initial_metadata()", None)  # grpc.aio race, see the module docstring
        out["server stream async-for raises"] = err
        bidi = stub.FullDuplexCall(metadata=MD, timeout=T)
        await bounded(bidi.write(_one_response()))
        await bounded(bidi.read())
        await bounded(bidi.write(_stream_status(code, message)))
        out["bidi read() raises"] = err_obs(await acatch(bidi.read()))
        out["bidi call"] = {
            "code()": await bounded(bidi.code()),
            "details()": await bounded(bidi.details()),
            "initial_metadata()": md(await bounded(bidi.initial_metadata())),
            "trailing_metadata()": md(await bounded(bidi.trailing_metadata())),
        }

        async def fail() -> AsyncIterator[echo_pb2.EchoRequest]:
            yield echo_pb2.EchoRequest(message="x", fail_code=code.value[0])

        out["client stream raises"] = err_obs(
            await acatch(_echo(ch).ClientStream(fail(), timeout=T))
        )
        return out

    return scenario


@pytest.mark.parametrize(("code", "message"), STATUSES, ids=STATUS_IDS)
def test_aio_server_status_reaches_the_caller_unchanged(
    shared_cluster: LocalCluster, variant: Variant, code: grpc.StatusCode, message: str
) -> None:
    g, _ = aio_side_by_side(
        shared_cluster, variant, _aio_status_scenario(code, message), "aio server status"
    )
    assert g["await unary raises"]["code()"] is code
    assert g["await unary raises"]["details()"] == message


LATE_CODES = [grpc.StatusCode.ABORTED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE]


def _initial_metadata_before_failure(code: grpc.StatusCode) -> Callable[[Any], dict[str, Any]]:
    """The server sends initial metadata (and, on the bidi call, a response) and then fails."""

    def scenario(ch: Any) -> dict[str, Any]:
        stub = _stub(ch)
        requests = iter([_one_response(), _stream_status(code, "late failure")])
        responses = stub.FullDuplexCall(requests, metadata=MD, timeout=T)
        first = next(responses)
        raised = catch(lambda: next(responses))
        unary = catch(
            lambda: stub.UnaryCall(_unary_status(code, "late failure"), metadata=MD, timeout=T)
        )
        return {
            "first response size": len(first.payload.body),
            "bidi error": err_obs(raised),
            "bidi call initial_metadata()": md(responses.initial_metadata()),
            "unary error": err_obs(unary),
        }

    return scenario


@pytest.mark.parametrize("code", LATE_CODES, ids=[c.name for c in LATE_CODES])
def test_sync_initial_metadata_sent_before_failing_is_kept(
    shared_cluster: LocalCluster, variant: Variant, code: grpc.StatusCode
) -> None:
    g, _ = side_by_side(
        shared_cluster,
        variant,
        _initial_metadata_before_failure(code),
        "initial metadata on errors",
    )
    sent = ("tuple", (("_Metadatum", ECHO_INITIAL_KEY, "initial-value"),))
    assert g["bidi error"]["initial_metadata()"] == sent  # grpc keeps it
    assert g["unary error"]["initial_metadata()"] == sent


def _aio_initial_metadata_before_failure(
    code: grpc.StatusCode,
) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    async def scenario(ch: Any) -> dict[str, Any]:
        stub = _stub(ch)
        bidi = stub.FullDuplexCall(metadata=MD, timeout=T)
        await bounded(bidi.write(_one_response()))
        first = await bounded(bidi.read())
        await bounded(bidi.write(_stream_status(code, "late failure")))
        raised = await acatch(bidi.read())
        unary = await acatch(
            stub.UnaryCall(_unary_status(code, "late failure"), metadata=MD, timeout=T)
        )
        return {
            "first response": getattr(getattr(first, "payload", None), "body", first),
            "bidi error": err_obs(raised),
            "bidi call initial_metadata()": md(await bounded(bidi.initial_metadata())),
            "unary error": err_obs(unary),
        }

    return scenario


@pytest.mark.parametrize("code", LATE_CODES, ids=[c.name for c in LATE_CODES])
def test_aio_initial_metadata_sent_before_failing_is_kept(
    shared_cluster: LocalCluster, variant: Variant, code: grpc.StatusCode
) -> None:
    g, _ = aio_side_by_side(
        shared_cluster,
        variant,
        _aio_initial_metadata_before_failure(code),
        "aio initial metadata on errors",
    )
    sent = ("Metadata", (("tuple", ECHO_INITIAL_KEY, "initial-value"),))
    assert g["bidi error"]["initial_metadata()"] == sent
    assert g["unary error"]["initial_metadata()"] == sent


# ------------------------------------------------- 3: cancelled sync future


def _sync_cancelled_future(cluster: LocalCluster, in_flight: bool) -> Callable[[Any], dict]:
    def scenario(ch: Any) -> dict[str, Any]:
        before = _echo_calls(cluster)
        fut = _echo(ch).Unary.future(echo_pb2.EchoRequest(message="x", sleep_ms=3000), timeout=T)
        if in_flight:
            wait_until(lambda: _echo_calls(cluster) > before, BOUND, "the server has the call")
        out: dict[str, Any] = {"cancel()": fut.cancel()}
        out.update(
            {
                "cancelled()": fut.cancelled(),
                "done()": fut.done(),
                "running()": fut.running(),
                "result()": outcome(lambda: fut.result(timeout=BOUND)),
                "exception()": outcome(lambda: fut.exception(timeout=BOUND)),
                "traceback()": outcome(lambda: fut.traceback(timeout=BOUND)),
                "code()": fut.code(),
                "details()": fut.details(),
                "initial_metadata()": md(fut.initial_metadata()),
                "trailing_metadata()": md(fut.trailing_metadata()),
                "second cancel()": fut.cancel(),
                "is_active()": fut.is_active(),
            }
        )
        seen: list[Any] = []
        fut.add_done_callback(seen.append)
        out["add_done_callback on the finished future ran at once with it"] = seen == [fut]
        done = _echo(ch).Unary.future(echo_pb2.EchoRequest(message="y"), timeout=T)
        done.result(timeout=T)
        out["cancel() of a finished future"] = done.cancel()
        seen_done: list[Any] = []
        done.add_done_callback(seen_done.append)
        out["add_done_callback on a succeeded future ran at once"] = seen_done == [done]
        return out

    return scenario


@pytest.mark.parametrize("in_flight", [False, True], ids=["at-once", "in-flight"])
def test_sync_cancelled_unary_future(
    shared_cluster: LocalCluster, variant: Variant, in_flight: bool
) -> None:
    g, _ = side_by_side(
        shared_cluster,
        variant,
        _sync_cancelled_future(shared_cluster, in_flight),
        "cancelled sync future",
    )
    assert g["code()"] is grpc.StatusCode.CANCELLED
    assert g["result()"] == "raised grpc.FutureCancelledError"


# ---------------------------------------------------------- 4: aio cancels


async def _settle_after_cancel(call: Any, fired: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cancelled() right after cancel()": call.cancelled(),
        "done() right after cancel()": call.done(),
    }
    out["code()"] = await bounded(call.code())
    out["details()"] = await bounded(call.details())
    out["cancelled()"] = call.cancelled()
    out["done()"] = call.done()
    deadline = time.monotonic() + _limit()
    while not fired and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    _Waits.hung = _Waits.hung or not fired
    out["done callbacks fired"] = len(fired)
    out["callback got the call"] = bool(fired) and fired[0] is call
    out["second cancel()"] = call.cancel()
    out["initial_metadata()"] = md(await bounded(call.initial_metadata()))
    out["trailing_metadata()"] = md(await bounded(call.trailing_metadata()))
    return out


def _aio_cancel_scenario(cluster: LocalCluster, moment: str) -> Callable[[Any], Awaitable[dict]]:
    async def scenario(ch: Any) -> dict[str, Any]:
        echo = _echo(ch)
        fired: list[Any] = []
        out: dict[str, Any] = {}
        if moment in ("server-stream-at-once", "bidi-at-once"):
            if moment == "bidi-at-once":
                call = echo.Bidi(timeout=T)
            else:
                call = echo.ServerStream(echo_pb2.EchoRequest(message="x"), timeout=T)
            call.add_done_callback(fired.append)
            out["cancel()"] = call.cancel()
            out.update(await _settle_after_cancel(call, fired))
            out["read() after cancel"] = await aoutcome(call.read())
        elif moment == "server-stream-after-first-message":
            call = echo.ServerStream(echo_pb2.EchoRequest(message="x", interval_ms=50), timeout=T)
            call.add_done_callback(fired.append)
            first = await bounded(call.read())
            out["first message seq"] = getattr(first, "seq", first)
            out["cancel()"] = call.cancel()
            out.update(await _settle_after_cancel(call, fired))
            out["read() after cancel"] = await aoutcome(call.read())
        elif moment == "bidi-after-first-message":
            call = echo.Bidi(timeout=T)
            call.add_done_callback(fired.append)
            await bounded(call.write(echo_pb2.EchoRequest(message="x")))
            first = await bounded(call.read())
            out["first message"] = getattr(first, "message", first)
            out["cancel()"] = call.cancel()
            out.update(await _settle_after_cancel(call, fired))
            out["read() after cancel"] = await aoutcome(call.read())
            out["write() after cancel"] = await aoutcome(call.write(echo_pb2.EchoRequest()))
        else:  # slow-unary-in-flight / slow-unary-at-once
            before = await asyncio.to_thread(_echo_calls, cluster)
            call = echo.Unary(echo_pb2.EchoRequest(message="x", sleep_ms=3000), timeout=T)
            call.add_done_callback(fired.append)
            if moment == "slow-unary-in-flight":
                deadline = time.monotonic() + BOUND
                while await asyncio.to_thread(_echo_calls, cluster) <= before:
                    assert time.monotonic() < deadline, "the server never got the call"
                    await asyncio.sleep(0.01)
            out["cancel()"] = call.cancel()
            out.update(await _settle_after_cancel(call, fired))
            out["await call"] = await aoutcome(_await(call))
        return out

    return scenario


async def _await(call: Any) -> Any:
    return await call


CANCEL_MOMENTS = [
    "server-stream-at-once",
    "bidi-at-once",
    "server-stream-after-first-message",
    "bidi-after-first-message",
    "slow-unary-at-once",
    "slow-unary-in-flight",
]


@pytest.mark.parametrize("moment", CANCEL_MOMENTS)
def test_aio_cancel_settles_like_grpc(
    shared_cluster: LocalCluster, variant: Variant, moment: str
) -> None:
    g, _ = aio_side_by_side(
        shared_cluster, variant, _aio_cancel_scenario(shared_cluster, moment), f"aio {moment}"
    )
    assert g["code()"] is grpc.StatusCode.CANCELLED
    assert g["details()"] == "Locally cancelled by application!"


# ------------------------------------------------------- 5: tiny timeout


def _sync_tiny_timeout(ch: Any) -> dict[str, Any]:
    echo = _echo(ch)
    slow = echo_pb2.EchoRequest(message="x", sleep_ms=300)
    out: dict[str, Any] = {}
    for timeout in (1e-6, 1e-3):
        out[f"unary timeout={timeout}"] = err_obs(
            catch(lambda t=timeout: echo.Unary(slow, timeout=t))
        )
        out[f"server stream timeout={timeout}"] = err_obs(
            catch(lambda t=timeout: list(echo.ServerStream(slow, timeout=t)))
        )
    return out


def test_sync_tiny_timeout(shared_cluster: LocalCluster, variant: Variant) -> None:
    g, _ = side_by_side(shared_cluster, variant, _sync_tiny_timeout, "sync tiny timeout")
    assert g["unary timeout=1e-06"]["code()"] is grpc.StatusCode.DEADLINE_EXCEEDED
    assert g["unary timeout=1e-06"]["details()"] == "Deadline Exceeded"


async def _aio_tiny_timeout(ch: Any) -> dict[str, Any]:
    echo = _echo(ch)
    slow = echo_pb2.EchoRequest(message="x", sleep_ms=300)
    out: dict[str, Any] = {}
    for timeout in (1e-6, 1e-3):
        out[f"unary timeout={timeout}"] = err_obs(await acatch(echo.Unary(slow, timeout=timeout)))

        async def drain(t: float = timeout) -> list[Any]:
            return [r async for r in echo.ServerStream(slow, timeout=t)]

        out[f"server stream timeout={timeout}"] = err_obs(await acatch(drain()))
    return out


def test_aio_tiny_timeout(shared_cluster: LocalCluster, variant: Variant) -> None:
    g, _ = aio_side_by_side(shared_cluster, variant, _aio_tiny_timeout, "aio tiny timeout")
    assert g["unary timeout=1e-06"]["code()"] is grpc.StatusCode.DEADLINE_EXCEEDED


# ---------------------------------------------------------- 6: signatures


SIGNATURES = [
    ("insecure_channel", grpc.insecure_channel, eagle.insecure_channel),
    ("secure_channel", grpc.secure_channel, eagle.secure_channel),
    ("aio.insecure_channel", grpc.aio.insecure_channel, eagle.aio.insecure_channel),
    ("aio.secure_channel", grpc.aio.secure_channel, eagle.aio.secure_channel),
]


@pytest.mark.parametrize(
    ("name", "grpc_fn", "eagle_fn"), SIGNATURES, ids=[s[0] for s in SIGNATURES]
)
def test_channel_factories_start_with_grpcs_parameters(
    name: str, grpc_fn: Callable[..., Any], eagle_fn: Callable[..., Any]
) -> None:
    theirs = [(p.name, p.kind) for p in inspect.signature(grpc_fn).parameters.values()]
    ours = [(p.name, p.kind) for p in inspect.signature(eagle_fn).parameters.values()]
    diff = Diff(f"signature of {name}")
    diff.eq("leading parameters (name, kind)", theirs, ours[: len(theirs)])
    diff.check()


def test_sync_positional_grpc_call_works(shared_cluster: LocalCluster) -> None:
    target = ",".join(shared_cluster.endpoints)
    ch = eagle.insecure_channel(target, [("grpc.enable_http_proxy", 0)], grpc.Compression.Gzip)
    with ch:
        got = _stub(ch).UnaryCall(messages_pb2.SimpleRequest(response_size=5), timeout=T)
    assert len(got.payload.body) == 5


def test_aio_positional_grpc_call_works(shared_cluster: LocalCluster) -> None:
    target = ",".join(shared_cluster.endpoints)

    async def main() -> int:
        ch = eagle.aio.insecure_channel(
            target, [("grpc.enable_http_proxy", 0)], grpc.Compression.Gzip
        )
        async with ch:
            got = await _stub(ch).UnaryCall(messages_pb2.SimpleRequest(response_size=5), timeout=T)
        return len(got.payload.body)

    assert asyncio.run(main()) == 5


# -------------------------------------------------------- 7: closed channel


def _sync_closed(ch: Any) -> dict[str, Any]:
    stub = _stub(ch)
    ch.close()
    calls: dict[str, Callable[[], Any]] = {
        "unary_unary": lambda: stub.EmptyCall(empty_pb2.Empty(), timeout=T),
        "unary_unary with_call": lambda: stub.EmptyCall.with_call(empty_pb2.Empty(), timeout=T),
        "unary_unary future": lambda: stub.EmptyCall.future(empty_pb2.Empty(), timeout=T),
        "unary_stream": lambda: stub.StreamingOutputCall(_one_response(), timeout=T),
        "stream_unary": lambda: stub.StreamingInputCall(iter([]), timeout=T),
        "stream_stream": lambda: stub.FullDuplexCall(iter([]), timeout=T),
    }
    out: dict[str, Any] = {}
    for kind, make in calls.items():
        try:
            call = make()
        except Exception as exc:
            out[kind] = {"raised when called": type(exc), "message": str(exc)}
            continue
        follow = catch(lambda c=call: c.result() if hasattr(c, "result") else list(c))
        out[kind] = {"returned": type(call).__name__, "then": err_obs(follow)}
    return out


def test_sync_call_on_closed_channel(shared_cluster: LocalCluster, variant: Variant) -> None:
    with grpc_channel(shared_cluster) as ch:
        g = _sync_closed(ch)
    e = _sync_closed(eagle_channel(shared_cluster, variant))
    diff = Diff("sync call on a closed channel")
    diff.compare(g, e)
    diff.check()
    assert g["unary_unary"]["raised when called"] is ValueError


async def _aio_closed(ch: Any) -> dict[str, Any]:
    stub = _stub(ch)
    await ch.close()
    calls: dict[str, Callable[[], Any]] = {
        "unary_unary": lambda: stub.EmptyCall(empty_pb2.Empty(), timeout=T),
        "unary_stream": lambda: stub.StreamingOutputCall(_one_response(), timeout=T),
        "stream_unary": lambda: stub.StreamingInputCall(timeout=T),
        "stream_stream": lambda: stub.FullDuplexCall(timeout=T),
    }
    out: dict[str, Any] = {}
    for kind, make in calls.items():
        try:
            call = make()
        except Exception as exc:
            out[kind] = {"raised when called": type(exc), "message": str(exc)}
            continue
        if kind == "unary_unary":
            follow = await acatch(_await(call))
        elif kind == "stream_unary":
            follow = await acatch(call.done_writing())
        else:
            follow = await acatch(call.read())
        out[kind] = {"returned": type(call).__name__, "then": err_obs(follow)}
    return out


def test_aio_call_on_closed_channel(shared_cluster: LocalCluster, variant: Variant) -> None:
    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            await observe(_aio_closed, grpc_aio_channel(shared_cluster)),
            await observe(_aio_closed, eagle_aio_channel(shared_cluster, variant)),
        )

    g, e = asyncio.run(both())
    diff = Diff("aio call on a closed channel")
    diff.compare(g, e)
    diff.check()
    assert g["unary_unary"]["raised when called"] is grpc.aio.UsageError


# ----------------------------------------------------------------- 8: logging


def test_eagle_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("eagle").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers), handlers


_DEAD_ENDPOINT_SCRIPT = textwrap.dedent(
    """
    import logging, socket, sys, time
    if sys.argv[1] == "configured":
        logging.basicConfig(level=logging.WARNING)
    import grpc
    import eagle
    from eagle.testing.interop import empty_pb2, test_pb2_grpc
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    config = {"health": {"interval": 0.2, "timeout": 0.5}}
    with eagle.insecure_channel(f"127.0.0.1:{port}", config=config) as ch:
        try:
            test_pb2_grpc.TestServiceStub(ch).EmptyCall(empty_pb2.Empty(), timeout=1)
        except grpc.RpcError as err:
            print("call failed", err.code())
        deadline = time.monotonic() + 5
        while not any(s.last_error for s in ch.status().values()):
            assert time.monotonic() < deadline, ch.status()
            time.sleep(0.02)
    print("done")
    """
)


def _run_dead_endpoint(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _DEAD_ENDPOINT_SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_unconfigured_logging_prints_nothing() -> None:
    configured = _run_dead_endpoint("configured")
    assert configured.returncode == 0, configured.stderr
    # the scenario does make eagle warn: with logging configured, the warning shows
    assert "WARNING:eagle" in configured.stderr, configured.stderr
    quiet = _run_dead_endpoint("unconfigured")
    assert quiet.returncode == 0, quiet.stderr
    assert "done" in quiet.stdout
    assert quiet.stderr == "", f"stderr with logging never configured:\n{quiet.stderr}"


# ------------------------------------------------- 9: stream call accessors


def _sync_stream_accessors(ch: Any) -> dict[str, Any]:
    stub = _stub(ch)
    out: dict[str, Any] = {}

    def call_obs(call: Any) -> dict[str, Any]:
        return {
            "code()": call.code(),
            "details()": call.details(),
            "initial_metadata()": md(call.initial_metadata()),
            "trailing_metadata()": md(call.trailing_metadata()),
            "done()": call.done(),
            "running()": call.running(),
            "cancelled()": call.cancelled(),
            "is_active()": call.is_active(),
            "result()": outcome(lambda: call.result(timeout=BOUND)),
            "exception()": outcome(lambda: call.exception(timeout=BOUND)),
            "exception() is the call": call.exception(timeout=BOUND) is call,
            "traceback()": outcome(lambda: call.traceback(timeout=BOUND)),
            "cancel() after the end": call.cancel(),
        }

    two = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=n) for n in (1, 2)]
    )
    ok = stub.StreamingOutputCall(two, metadata=MD, timeout=T)
    out["server stream OK: sizes"] = [len(r.payload.body) for r in ok]
    out["server stream OK"] = call_obs(ok)
    failing = stub.StreamingOutputCall(
        _stream_status(grpc.StatusCode.NOT_FOUND, "no such thing"), metadata=MD, timeout=T
    )
    catch(lambda: list(failing))
    out["server stream failed"] = call_obs(failing)
    echo_fail = _echo(ch).ServerStream(
        echo_pb2.EchoRequest(message="x", count=2, fail_code=5), timeout=T
    )
    got: list[int] = []
    catch(lambda: [got.append(r.seq) for r in echo_fail])
    out["server stream failed after 2 messages: seqs"] = got
    out["server stream failed after 2 messages"] = call_obs(echo_fail)
    bidi = stub.FullDuplexCall(iter([two]), metadata=MD, timeout=T)
    out["bidi OK: sizes"] = [len(r.payload.body) for r in bidi]
    out["bidi OK"] = call_obs(bidi)
    bidi_fail = stub.FullDuplexCall(
        iter([_one_response(), _stream_status(grpc.StatusCode.ABORTED, "stop")]),
        metadata=MD,
        timeout=T,
    )
    catch(lambda: list(bidi_fail))
    out["bidi failed"] = call_obs(bidi_fail)
    return out


def test_sync_stream_accessors_after_the_end(
    shared_cluster: LocalCluster, variant: Variant
) -> None:
    g, _ = side_by_side(shared_cluster, variant, _sync_stream_accessors, "sync stream accessors")
    assert g["server stream OK"]["code()"] is grpc.StatusCode.OK
    assert g["bidi failed"]["code()"] is grpc.StatusCode.ABORTED


async def _aio_stream_accessors(ch: Any) -> dict[str, Any]:
    stub = _stub(ch)
    out: dict[str, Any] = {}

    async def call_obs(call: Any, initial: bool = True) -> dict[str, Any]:
        obs = {
            "code()": await bounded(call.code()),
            "details()": await bounded(call.details()),
            "trailing_metadata()": md(await bounded(call.trailing_metadata())),
            "done()": call.done(),
            "cancelled()": call.cancelled(),
            "cancel() after the end": call.cancel(),
        }
        if initial:
            obs["initial_metadata()"] = md(await bounded(call.initial_metadata()))
        return obs

    async def drain(call: Any) -> list[Any]:
        return [r async for r in call]

    two = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=n) for n in (1, 2)]
    )
    ok = stub.StreamingOutputCall(two, metadata=MD, timeout=T)
    sizes = await bounded(drain(ok))
    out["server stream OK: sizes"] = [len(r.payload.body) for r in sizes] if sizes != HANG else HANG
    out["server stream OK"] = await call_obs(ok)
    out["server stream OK: read() after the end"] = await aoutcome(ok.read())
    failing = stub.StreamingOutputCall(
        _stream_status(grpc.StatusCode.NOT_FOUND, "no such thing"), metadata=MD, timeout=T
    )
    await acatch(drain(failing))
    # initial metadata of a server stream failing at once: grpc.aio race, not compared
    out["server stream failed"] = await call_obs(failing, initial=False)
    echo_fail = _echo(ch).ServerStream(
        echo_pb2.EchoRequest(message="x", count=2, fail_code=5), timeout=T
    )
    seqs: list[int] = []

    async def collect() -> None:
        async for r in echo_fail:
            seqs.append(r.seq)

    out["server stream failed after 2 messages: raised"] = err_obs(await acatch(collect()))
    out["server stream failed after 2 messages: seqs"] = seqs
    out["server stream failed after 2 messages"] = await call_obs(echo_fail)
    bidi = stub.FullDuplexCall(metadata=MD, timeout=T)
    await bounded(bidi.write(two))
    await bounded(bidi.done_writing())
    got = await bounded(drain(bidi))
    out["bidi OK: sizes"] = [len(r.payload.body) for r in got] if got != HANG else HANG
    out["bidi OK"] = await call_obs(bidi)
    bidi_fail = stub.FullDuplexCall(metadata=MD, timeout=T)
    await bounded(bidi_fail.write(_one_response()))
    await bounded(bidi_fail.read())
    await bounded(bidi_fail.write(_stream_status(grpc.StatusCode.ABORTED, "stop")))
    out["bidi failed: read()"] = err_obs(await acatch(bidi_fail.read()))
    out["bidi failed"] = await call_obs(bidi_fail)
    return out


def test_aio_stream_accessors_after_the_end(shared_cluster: LocalCluster, variant: Variant) -> None:
    g, _ = aio_side_by_side(shared_cluster, variant, _aio_stream_accessors, "aio stream accessors")
    assert g["server stream OK"]["code()"] is grpc.StatusCode.OK
    assert g["bidi failed"]["code()"] is grpc.StatusCode.ABORTED


# ---------------------------------------------- 10: interceptor call details


def _details_obs(details: Any, sync: bool) -> dict[str, Any]:
    out = {
        "type": type(details),
        "method": details.method,
        "timeout": details.timeout,
        "metadata": md(details.metadata),
        "credentials": details.credentials,
        "wait_for_ready": details.wait_for_ready,
    }
    if sync:
        out["compression"] = details.compression
    return out


class _Recorder(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def _pass(self, kind: str, continuation: Any, details: Any, request: Any) -> Any:
        self.seen.append({"kind": kind, **_details_obs(details, sync=True)})
        return continuation(details, request)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._pass("unary_unary", continuation, details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._pass("unary_stream", continuation, details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._pass("stream_unary", continuation, details, requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self._pass("stream_stream", continuation, details, requests)


_META = (("x-app", "v"), ("x-app-bin", b"\x01\x02"))


def _sync_intercepted_calls(ch: Any) -> dict[str, Any]:
    rec = _Recorder()
    stub = _stub(grpc.intercept_channel(ch, rec))
    empty = empty_pb2.Empty()
    stub.EmptyCall(empty)
    stub.EmptyCall(
        empty, timeout=5, metadata=_META, wait_for_ready=True, compression=grpc.Compression.Gzip
    )
    stub.EmptyCall.with_call(empty, timeout=5.5, metadata=_META)
    stub.EmptyCall.future(empty, timeout=6, metadata=_META).result(timeout=T)
    list(stub.StreamingOutputCall(_one_response(), timeout=7, metadata=_META))
    stub.StreamingInputCall(iter([]), timeout=8, metadata=_META)
    list(stub.FullDuplexCall(iter([]), timeout=9, metadata=_META))
    return {f"call {n}": seen for n, seen in enumerate(rec.seen)} | {"calls seen": len(rec.seen)}


def test_sync_interceptors_see_grpcs_call_details(
    shared_cluster: LocalCluster, variant: Variant
) -> None:
    g, _ = side_by_side(
        shared_cluster, variant, _sync_intercepted_calls, "sync interceptor call details"
    )
    assert g["calls seen"] == 7


class _AioRecorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def interceptors(self) -> list[Any]:
        rec = self

        class UU(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
            async def intercept_unary_unary(self, c: Any, d: Any, r: Any) -> Any:
                rec.seen.append({"kind": "unary_unary", **_details_obs(d, sync=False)})
                return await c(d, r)

        class US(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
            async def intercept_unary_stream(self, c: Any, d: Any, r: Any) -> Any:
                rec.seen.append({"kind": "unary_stream", **_details_obs(d, sync=False)})
                return await c(d, r)

        class SU(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[misc]
            async def intercept_stream_unary(self, c: Any, d: Any, r: Any) -> Any:
                rec.seen.append({"kind": "stream_unary", **_details_obs(d, sync=False)})
                return await c(d, r)

        class SS(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
            async def intercept_stream_stream(self, c: Any, d: Any, r: Any) -> Any:
                rec.seen.append({"kind": "stream_stream", **_details_obs(d, sync=False)})
                return await c(d, r)

        return [UU(), US(), SU(), SS()]


async def _aio_intercepted_calls(ch: Any, rec: _AioRecorder) -> dict[str, Any]:
    stub = _stub(ch)
    empty = empty_pb2.Empty()
    await bounded(_await(stub.EmptyCall(empty)))
    await bounded(
        _await(
            stub.EmptyCall(
                empty,
                timeout=5,
                metadata=_META,
                wait_for_ready=True,
                compression=grpc.Compression.Gzip,
            )
        )
    )

    async def drain(call: Any) -> list[Any]:
        return [r async for r in call]

    await bounded(drain(stub.StreamingOutputCall(_one_response(), timeout=7, metadata=_META)))

    async def nothing() -> AsyncIterator[Any]:
        return
        yield

    await bounded(_await(stub.StreamingInputCall(nothing(), timeout=8, metadata=_META)))
    await bounded(drain(stub.FullDuplexCall(nothing(), timeout=9, metadata=_META)))
    return {f"call {n}": seen for n, seen in enumerate(rec.seen)} | {"calls seen": len(rec.seen)}


def test_aio_interceptors_see_grpcs_call_details(
    shared_cluster: LocalCluster, variant: Variant
) -> None:
    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        g_rec = _AioRecorder()
        async with grpc_aio_channel(shared_cluster, interceptors=g_rec.interceptors()) as ch:
            g = await observe(lambda c: _aio_intercepted_calls(c, g_rec), ch)
        e_rec = _AioRecorder()
        async with eagle_aio_channel(
            shared_cluster, variant, interceptors=e_rec.interceptors()
        ) as ch:
            e = await observe(lambda c: _aio_intercepted_calls(c, e_rec), ch)
        return g, e

    g, e = asyncio.run(both())
    diff = Diff("aio interceptor call details")
    diff.compare(g, e)
    diff.check()
    assert g["calls seen"] == 5
