"""Server answers that prove a request was rejected before it was applied.

Most statuses a server sends say nothing about whether a request took effect: a server
may apply a write and still answer UNAVAILABLE. A few answers are known to come from
code that runs before the request reaches the part that applies it; a request rejected
that way can be sent again after a backoff, even when its method is not idempotent, and
its outcome is never "unknown". Each entry names the code, a fragment of the details
that identifies the answer, the methods for which the proof holds, and the source that
shows where the server returns it.

An entry must meet two tests:

1. **Unapplied, provably.** Every place in the server that produces this (code, details)
   for the methods in the entry's scope returns it before the request is proposed to
   raft (or, for reads, before anything is applied at all). An answer that one producer
   returns before and another after a proposal is out, or is scoped to the methods where
   only the early producer can answer.
2. **Worth another attempt.** A later attempt, on this member or another, can succeed
   without the client changing the request. The table makes eagle re-send for any
   method, past ``retry.max_attempts`` (bounded by the deadline and the retry budget): a
   deterministic refusal would only be sent again until the deadline. Such refusals
   need no entry anyway: an answered call's outcome is known (``outcome_unknown`` False)
   whatever its code.

The etcd entries were checked against the v3 gRPC server of the 3.4 line
(``etcdserver/api/v3rpc``, ``etcdserver/v3_server.go``, ``etcdserver/server.go``,
``raft/node.go``, ``raft/raft.go``) and of the 3.5+ line (the same files under
``server/``; ``raft`` moved to ``go.etcd.io/raft/v3`` after 3.5), with the messages of
``rpctypes/error.go`` and the error mapping of ``v3rpc/util.go`` (``togRPCError``: an
error it does not map, such as raft's ``ErrProposalDropped``, becomes UNKNOWN with the
error's text).

Checked and left out (they may have been applied, or another attempt cannot help):

* ``etcdserver: request timed out`` (and ``..., possibly due to previous leader
  failure`` / ``... connection lost``): ``processInternalRaftRequestOnce`` returns them
  from ``parseProposeCtxErr`` *after* ``Propose`` handed the entry to raft; it may
  still commit and apply.
* ``etcdserver: server stopped``: returned on ``s.done`` after the proposal.
* UNKNOWN ``raft: stopped`` (``raft.ErrStopped``): ``node.stepWithWaitOption`` may pick
  ``n.done`` over a result that is already there, i.e. after ``Step`` appended the entry.
* DEADLINE_EXCEEDED / CANCELLED (``context deadline exceeded``): the proposal may be
  in the log.
* ``etcdserver: request is too large`` (INVALID_ARGUMENT; ``processInternalRaftRequestOnce``
  before ``Propose``), ``grpc: received message larger than max`` (RESOURCE_EXHAUSTED,
  grpc-go), the request checks of ``v3rpc/key.go`` (``key is not provided``, ``too many
  operations in txn request``, ``duplicate key given in txn request``, ``value is
  provided``, ``lease is provided``): unapplied, but the same request gets the same
  answer.
* ``etcdserver: mvcc: database space exceeded`` (RESOURCE_EXHAUSTED, ``v3rpc/quota.go``
  before the request is proposed): unapplied, but only an operator (compact, defrag,
  disarm the alarm) ends it.
* ``etcdserver: invalid auth token`` (UNAUTHENTICATED, ``AuthInfoFromCtx`` before
  ``Propose``): unapplied, but the same token fails again; the client must authenticate
  anew. ``etcdserver: revision of auth store is old`` and ``permission denied`` are
  decided when the committed entry is applied (after raft), and need a new token or new
  permissions too.
* ``etcdserver: unhealthy cluster`` / ``re-configuration failed due to not enough
  started members`` (member add/remove with ``--strict-reconfig-check``): returned
  before ``configure`` proposes the change in ``AddMember``, but not every producer was
  checked on both lines; left out until they are.
* ``etcdserver: not leader`` (FAILED_PRECONDITION, ``MoveLeader`` on a follower):
  unapplied, but only the leader can serve it.

Where an etcd gRPC *composite* service (``v3lockpb.Lock``, ``v3electionpb.Election``)
makes several requests through its in-process client, an error from a later step can
follow an earlier one that was applied; entries whose producers sit behind the
interceptors are therefore scoped to ``/etcdserverpb.`` methods, which make at most one
proposal each (``Auth/Authenticate`` may make a second, which only issues another
token).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ETCD_CORE", "UNAPPLIED_ANSWERS", "UnappliedAnswer", "known_unapplied"]

#: method prefix of etcd's core v3 services (KV, Watch, Lease, Cluster, Maintenance, Auth)
ETCD_CORE = "/etcdserverpb."


@dataclass(frozen=True, slots=True)
class UnappliedAnswer:
    """One answer known to leave the request unapplied."""

    code: str
    #: lower-case fragment of the status details that identifies the answer
    fragment: str
    #: where the server returns it, before the request is applied
    source: str
    #: full-method prefixes the proof holds for ("" = every method)
    methods: tuple[str, ...] = ("",)
    #: full methods the proof does not hold for, although they match ``methods``
    except_methods: tuple[str, ...] = ()

    def covers(self, method: str | None) -> bool:
        """Whether the proof holds for ``method`` (None: the method is not known, so
        only an entry that holds for every method covers it)."""
        if method is None:
            return self.methods == ("",) and not self.except_methods
        if method in self.except_methods:
            return False
        return any(method.startswith(prefix) for prefix in self.methods)


UNAPPLIED_ANSWERS: tuple[UnappliedAnswer, ...] = (
    UnappliedAnswer(
        "UNAVAILABLE",
        "etcdserver: no leader",
        "etcd 3.4 and 3.5+ api/v3rpc/interceptor.go newUnaryInterceptor / "
        "newStreamInterceptor: rpctypes.ErrGRPCNoLeader for a request with `hasleader` "
        "metadata while s.Leader() is raft.None, before the handler runs. Also produced, "
        "via togRPCError(etcdserver.ErrNoLeader), by EtcdServer.waitLeader (v3_server.go) "
        "when the context ends, which LeaseRenew (renewals only extend a TTL), "
        "LeaseTimeToLive (a read) and PromoteMember (server.go) call; PromoteMember loops "
        "over forwarded promoteMemberHTTP attempts, any of which may have reached the "
        "leader, so it is excepted. monitorLeader cancels open `hasleader` streams with "
        "the same answer after 3 election timeouts without a leader: such a stream "
        "delivered responses (it is committed and never re-sent) or was a Watch / "
        "LeaseKeepAlive, which write nothing that a re-send would repeat harmfully",
        except_methods=("/etcdserverpb.Cluster/MemberPromote",),
    ),
    UnappliedAnswer(
        "UNAVAILABLE",
        "etcdserver: not capable",
        "etcd 3.4 and 3.5+ api/v3rpc/interceptor.go newUnaryInterceptor / "
        "newStreamInterceptor: rpctypes.ErrGRPCNotCapable while the cluster version has "
        "not enabled the v3 RPC capability (a member that is starting), before the "
        "handler runs; no other producer",
    ),
    UnappliedAnswer(
        "UNAVAILABLE",
        "etcdserver: rpc not supported for learner",
        "etcd 3.4 and 3.5+ api/v3rpc/interceptor.go newUnaryInterceptor (every request "
        "but Status and serializable Range) / newStreamInterceptor (every stream; 3.6: "
        "but Snapshot): rpctypes.ErrGPRCNotSupportedForLearner (3.4 spelling; "
        "ErrGRPCNotSupportedForLearner in 3.5+) when this member is a learner, before the "
        "handler runs; a voting member can serve the request",
    ),
    UnappliedAnswer(
        "RESOURCE_EXHAUSTED",
        "etcdserver: too many requests",
        "etcd 3.4 and 3.5+ v3_server.go processInternalRaftRequestOnce: "
        "ErrTooManyRequests when the committed index is more than "
        "maxGapBetweenApplyAndCommitIndex (5000) ahead of the applied index, the first "
        "check, before the request is marshalled and proposed; ends once apply catches up",
        methods=(ETCD_CORE,),
    ),
    UnappliedAnswer(
        "UNKNOWN",
        "raft proposal dropped",
        "etcd 3.4 raft/raft.go and go.etcd.io/raft/v3 raft.go stepLeader/stepFollower/"
        "stepCandidate: ErrProposalDropped when the leader is transferring leadership "
        "(leadTransferee != None, e.g. a leader stopping gracefully or MoveLeader), was "
        "removed, or its uncommitted-size limit is reached, or a follower has no leader, "
        "always before appendEntry; node.stepWithWaitOption returns Step's result, "
        "processInternalRaftRequestOnce / configure return it from Propose / "
        "ProposeConfChange, and togRPCError does not map it (UNKNOWN with its text)",
        methods=(ETCD_CORE,),
    ),
    UnappliedAnswer(
        "UNAVAILABLE",
        "etcdserver: leader changed",
        "etcd 3.4 v3_server.go linearizableReadLoop and 3.5+ requestCurrentIndex: "
        'ErrLeaderChanged when the leader changes while a ReadIndex is pending ("return a '
        'retryable error"); it reaches only linearizableReadNotify callers (Range, '
        "read-only Txn, linearizable MemberList, Authenticate and Downgrade before their "
        "proposal) and 3.5+ leaseTimeToLive (a read): no proposal was made",
        methods=(ETCD_CORE,),
    ),
)


def known_unapplied(
    code: str, details: str | None, method: str | None = None
) -> UnappliedAnswer | None:
    """The table entry that proves an answer (``code``, ``details``) to a call of
    ``method`` left its request unapplied, or None."""
    if not details:
        return None
    low = details.lower()
    for entry in UNAPPLIED_ANSWERS:
        if entry.code == code and entry.fragment in low and entry.covers(method):
            return entry
    return None
