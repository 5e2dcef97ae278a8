"""The sub-app mounted under a prefix in Starlette and FastAPI hosts (its lifespan never runs)."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from rsm_support import (
    ACCOUNT,
    EXAMPLE_APPLIED,
    EXAMPLE_IGNORED,
    EXAMPLE_REQUEST,
    NOT_FOUND_BODY,
    UNAUTHORIZED_BODY,
    UPSERT_URL,
    client_for,
    compact,
    example,
    json_headers,
    make_app,
    post_json,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from runtime_snapshot_mount import MemoryStore

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its TestClient and warns about httpx
    warnings.filterwarnings("ignore", message=".*httpx2", category=UserWarning)
    from starlette.testclient import TestClient

PREFIX = "/phonefarm"
MOUNTED_URL = PREFIX + UPSERT_URL


async def host_home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("host home")


def starlette_host(store: MemoryStore) -> Starlette:
    return Starlette(
        routes=[Route("/", host_home), Mount(PREFIX, app=make_app(store))],
    )


def fastapi_host(store: MemoryStore) -> FastAPI:
    host = FastAPI()

    @host.get("/")
    def home() -> dict[str, str]:
        return {"host": "home"}

    host.mount(PREFIX, make_app(store))
    return host


HOSTS = [pytest.param(starlette_host, id="starlette"), pytest.param(fastapi_host, id="fastapi")]


@pytest.mark.anyio
@pytest.mark.parametrize("build_host", HOSTS)
async def test_mounted_sub_app_answers_the_example_under_the_prefix(
    build_host: object, store: MemoryStore
) -> None:
    host = build_host(store)  # type: ignore[operator]
    async with client_for(host) as client:
        applied = await post_json(client, EXAMPLE_REQUEST, url=MOUNTED_URL)
        ignored = await post_json(client, example(strategy_version=6), url=MOUNTED_URL)
        home = await client.get("/")
    assert applied.content == compact(EXAMPLE_APPLIED)
    assert ignored.content == compact(EXAMPLE_IGNORED)
    assert home.status_code == 200
    stored = store.store_get(ACCOUNT)
    assert stored is not None and stored.strategy_version == 7


@pytest.mark.anyio
@pytest.mark.parametrize("build_host", HOSTS)
async def test_mounted_sub_app_keeps_its_error_answers(
    build_host: object, store: MemoryStore
) -> None:
    host = build_host(store)  # type: ignore[operator]
    async with client_for(host) as client:
        unauthorized = await post_json(client, EXAMPLE_REQUEST, url=MOUNTED_URL, token=None)
        invalid = await post_json(client, example(personality=None), url=MOUNTED_URL)
        missing = await post_json(client, example(account_id="nobody"), url=MOUNTED_URL)
        wrong_method = await client.get(MOUNTED_URL)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    assert unauthorized.content == UNAUTHORIZED_BODY
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "personality"]
    assert missing.content == NOT_FOUND_BODY
    assert wrong_method.status_code == 405
    assert wrong_method.json() == {"detail": "Method Not Allowed"}


@pytest.mark.anyio
@pytest.mark.parametrize("build_host", HOSTS)
async def test_unprefixed_path_is_not_served_by_the_host(
    build_host: object, store: MemoryStore
) -> None:
    host = build_host(store)  # type: ignore[operator]
    async with client_for(host) as client:
        response = await post_json(client, EXAMPLE_REQUEST, url=UPSERT_URL)
    assert response.status_code == 404
    assert store.store_get(ACCOUNT) is None


@pytest.mark.anyio
async def test_sub_app_mounted_under_a_nested_prefix_works(store: MemoryStore) -> None:
    host = Starlette(routes=[Mount("/api", routes=[Mount("/v1/phonefarm", app=make_app(store))])])
    async with client_for(host) as client:
        response = await post_json(client, EXAMPLE_REQUEST, url="/api/v1/phonefarm" + UPSERT_URL)
    assert response.content == compact(EXAMPLE_APPLIED)


@pytest.mark.anyio
async def test_unmounted_sub_app_works_without_its_lifespan(client: httpx.AsyncClient) -> None:
    # httpx.ASGITransport never sends lifespan events
    response = await post_json(client, EXAMPLE_REQUEST)
    assert response.content == compact(EXAMPLE_APPLIED)


@pytest.mark.parametrize("host_kind", ["starlette", "fastapi"])
def test_mounted_sub_app_works_while_the_hosts_own_lifespan_runs(
    store: MemoryStore, host_kind: str
) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: object) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    host: Starlette
    if host_kind == "starlette":
        host = Starlette(routes=[Mount(PREFIX, app=make_app(store))], lifespan=lifespan)
    else:
        host = FastAPI(lifespan=lifespan)
        host.mount(PREFIX, make_app(store))
    with TestClient(host) as client:
        assert events == ["startup"]
        response = client.post(
            MOUNTED_URL, content=json.dumps(EXAMPLE_REQUEST), headers=json_headers()
        )
        assert response.status_code == 200
        assert response.content == compact(EXAMPLE_APPLIED)
    assert events == ["startup", "shutdown"]
    stored = store.store_get(ACCOUNT)
    assert stored is not None and stored.snapshot_id == EXAMPLE_REQUEST["snapshot_id"]


@pytest.mark.anyio
async def test_middleware_added_to_the_sub_app_sees_every_upsert() -> None:
    store = MemoryStore()
    app = make_app(store)
    seen: list[str] = []

    class Recorder:
        def __init__(self, app: object) -> None:
            # Starlette documents a middleware's first parameter as ``app``; older releases
            # (0.40 among them) pass it by that name.
            self.inner = app

        async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
            if scope["type"] == "http":
                seen.append(f"{scope['method']} {scope['path']}")
            await self.inner(scope, receive, send)  # type: ignore[operator]

    app.add_middleware(Recorder)
    host = Starlette(routes=[Mount(PREFIX, app=app)])
    async with client_for(host) as client:
        response = await post_json(client, EXAMPLE_REQUEST, url=MOUNTED_URL)
    assert response.content == compact(EXAMPLE_APPLIED)
    assert seen == [f"POST {MOUNTED_URL}"]
