"""Fixtures of the core's tests: one memory store, the app on it, and an in-process client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from rsm_support import EXAMPLE_REQUEST, client_for, make_app, post_json, stored_in
from starlette.types import ASGIApp

from runtime_snapshot_mount import MemoryStore, Snapshot


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def app(store: MemoryStore) -> ASGIApp:
    return make_app(store)


@pytest.fixture
async def client(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(app) as client:
        yield client


@pytest.fixture
async def seeded(client: httpx.AsyncClient, store: MemoryStore) -> Snapshot:
    """The example request stored for the example account; returns what the store holds."""
    response = await post_json(client, EXAMPLE_REQUEST)
    assert response.status_code == 200, response.text
    stored = stored_in(store)
    assert stored is not None
    return stored
