"""Providers: membership (how eagle asks a member for its view of the cluster) and
discovery (where the member set comes from).

Membership, built in: ``etcd`` (:mod:`eagle.providers.etcd`) and ``eagle``
(:mod:`eagle.providers.eagle`, eagle's own ``eagle.membership.v1`` protocol). Add your
own with :func:`register_provider`; see :mod:`eagle.providers.base`.

Discovery, built in: ``dns`` (:mod:`eagle.providers.dns`) and ``etcd``
(:mod:`eagle.providers.etcd_naming`, etcd's gRPC naming registry). Add your own with
:func:`register_discovery_provider`; see :mod:`eagle.providers.discovery`.
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
from .discovery import (
    AioDiscoverySession,
    DiscoveryProvider,
    DiscoveryProviderFactory,
    DiscoverySession,
    available_discovery_providers,
    create_discovery_provider,
    get_discovery_provider,
    register_discovery_provider,
)
from .dns import DnsProvider
from .eagle import EagleProvider
from .etcd import EtcdProvider
from .etcd_naming import EtcdNamingProvider

__all__ = [
    "AioDiscoverySession",
    "CallResult",
    "DiscoveryProvider",
    "DiscoveryProviderFactory",
    "DiscoverySession",
    "DnsProvider",
    "EagleProvider",
    "EtcdNamingProvider",
    "EtcdProvider",
    "MembershipProbe",
    "MembershipProvider",
    "Metadata",
    "ProviderCall",
    "ProviderFactory",
    "ViewFetch",
    "available_discovery_providers",
    "available_providers",
    "call_metadata",
    "create_discovery_provider",
    "create_provider",
    "get_discovery_provider",
    "get_provider",
    "register_discovery_provider",
    "register_provider",
]
