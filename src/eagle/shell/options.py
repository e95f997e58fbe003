"""grpc channel options for each member's sub-channel, computed once from the config."""

from __future__ import annotations

import json

from ..config import Config

__all__ = ["subchannel_options"]

# options every eagle sub-channel gets: each member is one target of its own, so grpc's
# own picking does nothing there; eagle picks the member
_BASE: tuple[tuple[str, int | str], ...] = (("grpc.lb_policy_name", "pick_first"),)


def _grpc_retry_service_config(config: Config) -> str:
    r = config.retry
    policy = {
        "maxAttempts": max(2, r.max_attempts),
        "initialBackoff": f"{r.initial_backoff:.3f}s",
        "maxBackoff": f"{r.max_backoff:.3f}s",
        "backoffMultiplier": r.multiplier,
        "retryableStatusCodes": list(r.retryable_codes),
    }
    if r.per_try_timeout is not None:
        policy["perAttemptRecvTimeout"] = f"{r.per_try_timeout:.3f}s"
    return json.dumps(
        {
            "loadBalancingConfig": [{"pick_first": {}}],
            "methodConfig": [{"name": [{}], "retryPolicy": policy}],
        }
    )


def subchannel_options(config: Config, authority: str | None = None) -> list[tuple[str, int | str]]:
    """Options for one sub-channel: keepalive, gRPC retries when ``retry.mode`` is
    ``grpc``, an authority override for TLS, then the user's ``channel_options``."""
    opts: dict[str, int | str] = dict(_BASE)
    ka = config.keepalive
    if ka.time is not None:
        opts["grpc.keepalive_time_ms"] = int(ka.time * 1000)
        opts["grpc.keepalive_timeout_ms"] = int(ka.timeout * 1000)
        # grpcio 1.85: only ping_timeout bounds the wait for a ping ack (measured:
        # without it a frozen peer went unnoticed for 60 s and more)
        opts["grpc.http2.ping_timeout_ms"] = int(ka.timeout * 1000)
        opts["grpc.keepalive_permit_without_calls"] = 1 if ka.permit_without_calls else 0
        # keep pinging quiet long-lived streams (grpc's default stops after 2 pings)
        opts["grpc.http2.max_pings_without_data"] = 0
    if config.retry.mode == "grpc":
        opts["grpc.enable_retries"] = 1
        opts["grpc.service_config"] = _grpc_retry_service_config(config)
    if authority:
        opts["grpc.ssl_target_name_override"] = authority
        opts["grpc.default_authority"] = authority
    opts.update(config.channel_options)
    return list(opts.items())
