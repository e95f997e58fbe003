"""Real gRPC members that publish eagle membership views, for eagle's own tests.

A :class:`MemberServer` is one real gRPC server on loopback that serves
``eagle.testing.v1.Echo`` (the test service of :mod:`eagle.testing.server`),
``grpc.health.v1.Health`` and ``eagle.membership.v1.Membership``, the last two through
:class:`eagle.server.MembershipPublisher`. A :class:`MemberGroup` runs several of them
as one cluster (ids ``m0``, ``m1``, ...; every view lists every member's endpoint;
``m0`` leads at term 1), and lets tests change what a member publishes::

    with MemberGroup(3) as group:
        ch = eagle.insecure_channel(group.endpoints, config={"membership": "eagle"})
        group.set_view(1, leader_id="")        # m1 lost its leader -> PARTITIONED
        group.set_view(2, cluster_id="other")  # m2 is in another cluster
        group.set_view(0, term=1); group.elect(1)  # m1 leads everyone at term 2

As a program (``python -m eagle.testing.member_server --id m0 --port 0``) it serves one
member, prints ``READY <port>`` and then reads JSON objects, one per line, from stdin:
each is passed to ``set_view`` (``{"leader_id": ""}``), except ``{"serving": false}``
which sets the health status.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from types import TracebackType
from typing import Any

import grpc

from eagle.core.membership import MemberView
from eagle.server import MembershipPublisher, server_options
from eagle.testing.server import EchoService, ServerState
from eagle.testing.v1 import echo_pb2_grpc

__all__ = ["MemberGroup", "MemberServer", "main"]


class MemberServer:
    """One real gRPC member on loopback serving Echo, Health and Membership."""

    def __init__(
        self,
        member_id: str,
        cluster_id: str = "c1",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 32,
    ) -> None:
        self.member_id = member_id
        self.publisher = MembershipPublisher(member_id, cluster_id, has_quorum=True)
        self._pool = futures.ThreadPoolExecutor(workers, thread_name_prefix=f"member-{member_id}")
        self.server = grpc.server(self._pool, options=[*server_options(), ("grpc.so_reuseport", 0)])
        self.state = ServerState(member_id, self.publisher.health)
        self.state.set_serving(True)
        echo_pb2_grpc.add_EchoServicer_to_server(  # type: ignore[no-untyped-call]
            EchoService(self.state), self.server
        )
        self.publisher.add_to_server(self.server)
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise RuntimeError(f"cannot bind {host}:{port}")
        self.endpoint = f"{host}:{self.port}"
        self._started = False

    def start(self) -> MemberServer:
        """Start serving (idempotent)."""
        if not self._started:
            self.server.start()
            self._started = True
        return self

    def set_view(self, **changes: Any) -> MemberView:
        """Change the published view (see :meth:`MembershipPublisher.set_view`)."""
        return self.publisher.set_view(**changes)

    def set_serving(self, serving: bool) -> None:
        """Set the health status of the whole server and of the Echo service."""
        self.state.set_serving(serving)

    def stop(self, grace: float | None = None) -> None:
        """Stop the server (open streams end) and its thread pool."""
        self.publisher.close()
        self.server.stop(grace).wait(5)
        self._pool.shutdown(wait=False, cancel_futures=True)


class MemberGroup:
    """Several :class:`MemberServer` s that publish the views of one healthy cluster."""

    def __init__(self, size: int = 3, cluster_id: str = "c1", *, start: bool = True) -> None:
        self.cluster_id = cluster_id
        self.servers: list[MemberServer] = []
        try:
            for i in range(size):
                self.servers.append(MemberServer(f"m{i}", cluster_id))
            self.reset()
            if start:
                for s in self.servers:
                    s.start()
        except BaseException:
            self.close()
            raise

    @property
    def endpoints(self) -> list[str]:
        """The members' endpoints, in order."""
        return [s.endpoint for s in self.servers]

    def members(self, indices: Sequence[int] | None = None) -> dict[str, list[str]]:
        """``{member id: [endpoint]}`` for ``indices`` (default: every member)."""
        chosen = range(len(self.servers)) if indices is None else indices
        return {self.servers[i].member_id: [self.servers[i].endpoint] for i in chosen}

    def reset(self, leader: int = 0, term: int = 1) -> None:
        """Every member: same cluster, leader ``m<leader>``, ``term``, quorum, all members
        listed, serving."""
        members = self.members()
        for s in self.servers:
            s.set_view(
                cluster_id=self.cluster_id,
                leader_id=self.servers[leader].member_id,
                term=term,
                has_quorum=True,
                applied=100,
                members=members,
            )
            s.set_serving(True)

    def elect(self, leader: int, term: int | None = None) -> None:
        """Every member follows ``m<leader>`` (at ``term``, default one more than now)."""
        if term is None:
            term = max(s.publisher.view.term for s in self.servers) + 1
        for s in self.servers:
            s.set_view(leader_id=self.servers[leader].member_id, term=term)

    def set_view(self, i: int, **changes: Any) -> MemberView:
        """Change what member ``i`` publishes."""
        return self.servers[i].set_view(**changes)

    def index_of(self, endpoint: str) -> int:
        """The index of the member at ``endpoint``."""
        return self.endpoints.index(endpoint)

    def close(self) -> None:
        """Stop every member."""
        for s in self.servers:
            s.stop()

    def __enter__(self) -> MemberGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve one member; apply JSON view changes read from stdin until EOF."""
    parser = argparse.ArgumentParser(prog="python -m eagle.testing.member_server")
    parser.add_argument("--id", default="m0", help="member id")
    parser.add_argument("--cluster", default="c1", help="cluster id")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--leader", default="", help="leader id to publish")
    parser.add_argument("--term", type=int, default=1)
    args = parser.parse_args(argv)
    server = MemberServer(args.id, args.cluster, host=args.host, port=args.port)
    server.set_view(leader_id=args.leader, term=args.term, members={args.id: [server.endpoint]})
    server.start()
    sys.stdout.write(f"READY {server.port}\n")
    sys.stdout.flush()
    done = threading.Event()
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                change = json.loads(line)
                if "serving" in change:
                    server.set_serving(bool(change.pop("serving")))
                if change:
                    server.set_view(**change)
            except (ValueError, TypeError) as exc:
                sys.stderr.write(f"bad change {line!r}: {exc}\n")
                sys.stderr.flush()
    except KeyboardInterrupt:
        pass
    finally:
        done.set()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
