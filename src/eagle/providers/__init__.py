"""Membership providers: how eagle asks a member for its view of the cluster.

Built in: ``etcd`` (:mod:`eagle.providers.etcd`) and ``eagle``
(:mod:`eagle.providers.eagle`, eagle's own ``eagle.membership.v1`` protocol). Add your
own with :func:`register_provider`; see :mod:`eagle.providers.base`.
"""

from __future__ import annotations

from .base import (
    CallResult,
    MembershipProbe,
    MembershipProvider,
    Metadata,
    ProviderCall,
    ProviderFactory,
    ViewFetch,
    available_providers,
    call_metadata,
    create_provider,
    get_provider,
    register_provider,
)
from .eagle import EagleProvider
from .etcd import EtcdProvider

__all__ = [
    "CallResult",
    "EagleProvider",
    "EtcdProvider",
    "MembershipProbe",
    "MembershipProvider",
    "Metadata",
    "ProviderCall",
    "ProviderFactory",
    "ViewFetch",
    "available_providers",
    "call_metadata",
    "create_provider",
    "get_provider",
    "register_provider",
]
