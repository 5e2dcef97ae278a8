"""The sub-app's dispatcher: its routes, what it answers itself, middleware, health, read-back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from rsm_support import (
    ACCOUNT,
    EXAMPLE_REQUEST,
    NOT_FOUND_BODY,
    UNAUTHORIZED_BODY,
    UPSERT_URL,
    bearer,
    client_for,
    example,
    make_app,
    post_json,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime_snapshot_mount import Account, MemoryStore, create_app, hookimpl
from runtime_snapshot_mount.request import endpoint as endpoint_module

pytestmark = pytest.mark.anyio

READ_URL = f"/runtime-snapshots/{ACCOUNT}"


# -- what the dispatcher answers itself ----------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/runtime-snapshots", "/runtime-snapshots/upsert/x"])
async def test_an_unknown_path_is_404_with_a_request_id(store: MemoryStore, path: str) -> None:
    async with client_for(make_app(store)) as client:
        response = await client.post(path, headers={"X-Request-ID": "probe-1"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert response.headers["x-request-id"] == "probe-1"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", UPSERT_URL, "POST"),
        ("DELETE", UPSERT_URL, "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("PUT", "/openapi.json", "GET, HEAD"),
        ("POST", READ_URL, "GET, HEAD"),
    ],
)
async def test_another_method_is_405_naming_the_allowed_ones(
    store: MemoryStore, method: str, path: str, allowed: str
) -> None:
    app = make_app(store, openapi=True, read=True)
    async with client_for(app) as client:
        response = await client.request(method, path, headers=bearer())
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {"detail": "Method Not Allowed"}
    assert app.state.metrics.snapshot()["rejected"] == {"405": 1}


async def test_the_read_path_is_404_unless_read_back_is_on(store: MemoryStore) -> None:
    async with client_for(make_app(store)) as client:
        response = await client.get(READ_URL, headers=bearer())
    assert response.status_code == 404 and response.json() == {"detail": "Not Found"}


async def test_a_websocket_is_closed_and_the_lifespan_completes(store: MemoryStore) -> None:
    app = make_app(store)
    sent: list[dict[str, Any]] = []
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    await app({"type": "websocket", "path": "/", "headers": []}, receive, send)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


# -- middleware --------------------------------------------------------------------------------


class Stamp:
    """Middleware that adds a header to every answer and records the paths it saw."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])

        async def stamped(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-stamp", self.name.encode())]
            await send(message)

        await self.app(scope, receive, stamped)


async def test_middleware_wraps_every_route_the_last_added_outermost(store: MemoryStore) -> None:
    app = make_app(store)
    app.add_middleware(Stamp, name="inner")
    app.add_middleware(Stamp, name="outer")
    async with client_for(app) as client:
        upsert = await post_json(client, EXAMPLE_REQUEST)
        missing = await client.get("/nowhere")
    assert upsert.status_code == 200 and missing.status_code == 404
    for response in (upsert, missing):
        assert response.headers.get_list("x-stamp") == ["inner", "outer"]
    assert store.store_get(ACCOUNT) is not None


# -- health ------------------------------------------------------------------------------------


class PingStore(MemoryStore):
    """A memory store whose ``store_ping`` answers as told."""

    def __init__(self, answer: Callable[[], Awaitable[bool]]) -> None:
        super().__init__()
        self.answer = answer

    @hookimpl
    async def store_ping(self) -> bool:
        return await self.answer()


async def up() -> bool:
    return True


async def down() -> bool:
    return False


async def broken() -> bool:
    raise ConnectionRefusedError("the database is away")


async def hangs() -> bool:
    await asyncio.sleep(30)
    return True


async def health(app: Any) -> httpx.Response:
    async with client_for(app) as client:
        return await client.get("/healthz")  # no token


async def test_health_is_ok_without_a_token_on_a_store_without_store_ping() -> None:
    app = make_app(MemoryStore())
    response = await health(app)
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert app.state.metrics.snapshot()["rejected"] == {}  # probes are not counted


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (up, 200, {"status": "ok"}),
        (down, 503, {"status": "unavailable"}),
        (broken, 503, {"status": "unavailable"}),
    ],
    ids=["up", "down", "raises"],
)
async def test_health_follows_the_store_and_reveals_nothing_else(
    answer: Callable[[], Awaitable[bool]], status: int, body: dict[str, str]
) -> None:
    response = await health(make_app(PingStore(answer)))
    assert response.status_code == status
    assert response.json() == body
    assert "database" not in response.text


async def test_health_gives_up_on_a_store_that_does_not_answer_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(endpoint_module, "HEALTH_TIMEOUT", 0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await health(make_app(PingStore(hangs)))
    assert response.status_code == 503
    assert loop.time() - started < 2


# -- read-back ---------------------------------------------------------------------------------


class OwnAccounts:
    """Principal ``Principal("api-key")`` (the built-in token's) sees only ACCOUNT."""

    @hookimpl(tryfirst=True)
    def get_account(self, account_id: str, principal: Any) -> Account | None:
        return Account(account_id) if account_id == ACCOUNT else None


async def test_read_back_returns_the_stored_snapshot_as_show_prints_it(store: MemoryStore) -> None:
    app = make_app(store, read=True)
    async with client_for(app) as client:
        before = await client.get(READ_URL, headers=bearer())
        await post_json(client, EXAMPLE_REQUEST)
        after = await client.get(READ_URL, headers=bearer())
    assert (before.status_code, before.json()) == (404, {"detail": "Snapshot not found"})
    assert after.status_code == 200
    stored = store.store_get(ACCOUNT)
    assert stored is not None and after.json() == stored.to_json()
    assert after.json()["strategy_synced_at"] == "2026-03-22T08:30:00.000000Z"
    assert app.state.metrics.snapshot()["read"] == 1


async def test_read_back_checks_the_token_then_the_account_as_the_upsert_does(
    store: MemoryStore,
) -> None:
    app = create_app(store, OwnAccounts(), api_keys=["secret"], entry_points=False, read=True)
    async with client_for(app) as client:
        await post_json(client, EXAMPLE_REQUEST, token="secret")
        await post_json(client, example(account_id="account_other"), token="secret")
        no_token = await client.get(READ_URL)
        wrong_token = await client.get(READ_URL, headers=bearer("nope"))
        hidden = await client.get("/runtime-snapshots/account_other", headers=bearer("secret"))
        mine = await client.get(READ_URL, headers=bearer("secret"))
    assert (no_token.status_code, no_token.content) == (401, UNAUTHORIZED_BODY)
    assert no_token.headers["www-authenticate"] == "Bearer"
    assert wrong_token.status_code == 401
    assert (hidden.status_code, hidden.content) == (404, NOT_FOUND_BODY)
    assert mine.status_code == 200 and mine.json()["account_id"] == ACCOUNT
