from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.xen.helpers import FAST
from xen.pools import PoolManager
from xen.store import ObjectStore


@pytest.fixture
def store() -> ObjectStore:
    return ObjectStore()


@pytest.fixture
async def pools(store: ObjectStore) -> AsyncIterator[PoolManager]:
    manager = PoolManager(store, FAST)
    await manager.start()
    try:
        yield manager
    finally:
        await manager.aclose()
