"""The JSON-RPC API, one module per namespace (`session.*` in api/session.py, ...).

Each module exports `METHODS: list[api.registry.Method]`. To add a namespace, create its module
and list it in `NAMESPACES` below (module names are snake_case: `resource_set` holds
`resourceSet.*`); api/registry.py explains how to declare a method.

A namespace that needs a server-owned service (work that outlives the connection that asked,
e.g. migrations) also exports `lifespan`, an async context manager factory taking the
`ServerState`: the app enters it at startup, once the pools are started, and exits it at
shutdown, before the pools stop::

    @contextlib.asynccontextmanager
    async def lifespan(state: ServerState) -> AsyncIterator[None]:
        service = MigrationService(state)
        state.services["migrations"] = service   # handlers reach it via call.state.services
        try:
            yield
        finally:
            await service.aclose()               # cancel and await its tasks
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from api.registry import Registry

NAMESPACES: tuple[str, ...] = (
    "session",
    "token",
    "system",
    "xo",
    "server",
    "vm",
    "host",
    "task",
    "migration",
    "user",
    # What xo-web calls at start, with xo-server's (mostly empty) answers:
    "acl",
    "proxy",
    "resource_set",
    "backup_ng",
    "schedule",
    "tag",
    "sr",
    # What xo-web's pages ask, with xo-server's answers (XAPI's where it has the data;
    # host.* is above):
    "pool",
    "vif",
    "ip_pool",
    "group",
    "role",
    "plugin",
    "metadata_backup",
    "mirror_backup",
)

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


def build_registry(namespaces: tuple[str, ...] = NAMESPACES) -> Registry:
    registry = Registry()
    for name in namespaces:
        module = importlib.import_module(f"api.{name}")
        for method in module.METHODS:
            registry.add(method)
    return registry


def lifespans(namespaces: tuple[str, ...] = NAMESPACES) -> list[Lifespan]:
    """The `lifespan` hooks of the namespaces that define one, in namespace order."""
    hooks = []
    for name in namespaces:
        hook = getattr(importlib.import_module(f"api.{name}"), "lifespan", None)
        if hook is not None:
            hooks.append(hook)
    return hooks
