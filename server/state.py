"""Everything a request handler may need, built once by server/app.py."""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from api.registry import Registry
from server.acls import AccessControl
from server.auth import Authenticator
from server.config import ServerConfig
from server.oneshot import OneShotUrls
from server.push import PushHub
from server.storage import Storage
from server.views import Views
from xen.store import ObjectStore

if TYPE_CHECKING:
    from server.cluster import Cluster
    from server.connection import Connection


def _package_version() -> str:
    try:
        return importlib.metadata.version("xo-migrate")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


SERVER_VERSION = _package_version()  # what system.getServerVersion reports
API_VERSION = "0.1"  # what system.getVersion reports, as xo-server


@dataclass(slots=True)
class ServerState:
    config: ServerConfig
    store: ObjectStore
    storage: Storage
    auth: Authenticator
    acl: AccessControl  # groups, ACL entries, each user's rights
    views: Views  # what each non-admin may view
    push: PushHub
    registry: Registry
    oneshot: OneShotUrls
    pools: Any = None  # xen.pools.PoolManager once that module exists
    connections: set[Connection] = field(default_factory=set)
    # Server-owned services added by later namespaces (e.g. "migrations"), keyed by name.
    services: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    secret: bytes = b""  # the server secret (token HMACs, the pool password key)
    new_secret: bool = False  # not yet in the data dir: the cluster writes it once agreed
    # The instances sharing the store (Redis), server/cluster/; None with SQLite.
    cluster: Cluster | None = None
