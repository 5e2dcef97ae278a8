"""Faults on the client's side: a client that disconnects mid-body, and one that trickles it.

The real ``serve`` process is driven over raw sockets on 127.0.0.1, so that a request can stop
half-way; the body deadline (``body_timeout``, ``serve --body-timeout``) is also checked
in-process, where a recording store proves the store is never called for a trickled body.
Every wait is bounded; nothing asserts how long anything took.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from rsm_support import (
    ACCOUNT,
    OTHER_ACCOUNT,
    TOKEN,
    UPSERT_URL,
    assert_refused,
    client_for,
    example,
    free_port,
    json_headers,
    make_app,
    run_cli,
    serving,
)

from runtime_snapshot_mount import ConfigurationError, MemoryStore, Snapshot, UpsertResult, hookimpl

TIMEOUT_BODY = {"detail": "Request body not received in time"}
SERVER_BODY_TIMEOUT = "1"  # seconds
TRICKLE_EVERY_S = 0.3
MAX_TRICKLES = 100  # a bound on the loop (half a minute or so), far past the deadline


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real ``serve`` on ``memory://`` with a one-second body deadline; its base URL."""
    directory = tmp_path_factory.mktemp("faults")
    options = ["--store", "memory://", "--api-key", TOKEN, "--body-timeout", SERVER_BODY_TIMEOUT]
    with serving(*options, directory=directory) as url:
        yield url


def post(base_url: str, account_id: str, version: int) -> httpx.Response:
    body = example(account_id=account_id, strategy_version=version, snapshot_id=f"v{version}")
    return httpx.post(base_url + UPSERT_URL, json=body, headers=json_headers(), timeout=30)


def upserted(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.json()["status"] == "upserted"


def request_head(content_length: int) -> bytes:
    """The start of a valid upsert request whose body is to be ``content_length`` bytes."""
    lines = [
        f"POST {UPSERT_URL} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Authorization: Bearer {TOKEN}",
        "Content-Type: application/json",
        f"Content-Length: {content_length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def connect(base_url: str) -> socket.socket:
    port = int(base_url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def complete_response(data: bytes) -> tuple[int, Any] | None:
    """``(status, JSON body)`` once ``data`` holds a whole response with a Content-Length."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    if len(body) < int(headers["content-length"]):
        return None
    return int(lines[0].split()[1]), json.loads(body)


# -- a client that disconnects mid-request ---------------------------------------------------


@pytest.mark.parametrize("sent", ["headers-only", "half-the-body", "all-but-declared-padding"])
def test_a_client_that_disconnects_mid_body_stores_nothing_and_the_server_serves_on(
    server: str, sent: str
) -> None:
    account_id = f"account_disconnect_{sent}"
    assert upserted(post(server, account_id, 5))
    body = json.dumps(example(account_id=account_id, strategy_version=9)).encode()
    # "all-but-declared-padding" sends a complete, valid JSON document of version 9: only the
    # Content-Length (64 bytes more) says the body is unfinished.
    prefix = {"headers-only": b"", "half-the-body": body[: len(body) // 2]}.get(sent, body)
    with connect(server) as sock:
        sock.sendall(request_head(len(body) + 64) + prefix)
    # the server keeps serving, and version 9 was never stored: version 6 is still applied
    assert upserted(post(server, OTHER_ACCOUNT + "_" + sent, 1))
    assert upserted(post(server, account_id, 6))


# -- a client that trickles its body -------------------------------------------------------


def test_a_trickling_client_gets_408_while_other_requests_are_served(server: str) -> None:
    account_id = "account_trickle"
    assert upserted(post(server, account_id, 5))
    body = json.dumps(example(account_id=account_id, strategy_version=9)).encode()
    others: list[httpx.Response] = []
    received = b""
    answer = None
    with connect(server) as sock:
        # a whole version-9 document, then padding the Content-Length promises, byte by byte
        sock.sendall(request_head(len(body) + MAX_TRICKLES) + body)
        sock.settimeout(TRICKLE_EVERY_S)
        for _ in range(MAX_TRICKLES):
            others.append(post(server, "account_trickle_bystander", len(others) + 1))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")
                continue
            received += chunk
            answer = complete_response(received)
            if answer is not None or not chunk:
                break
    assert answer == (408, TIMEOUT_BODY), received
    assert others and all(upserted(response) for response in others)
    assert upserted(post(server, account_id, 6))  # version 9 never reached the store


class RecordingStore(MemoryStore):
    """A memory store that records which accounts ``store_upsert`` was called for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    @hookimpl
    def store_upsert(self, snapshot: Snapshot) -> UpsertResult:
        self.calls.append(snapshot.account_id)
        return super().store_upsert(snapshot)


@pytest.mark.anyio
async def test_a_trickled_body_answers_408_and_never_reaches_the_store() -> None:
    store = RecordingStore()
    app = make_app(store, body_timeout=0.5)
    body = json.dumps(example(strategy_version=9)).encode()

    async def trickle() -> AsyncIterator[bytes]:
        yield body[:10]
        await anyio.sleep(20)  # stalls; the app's deadline ends the request long before
        yield body[10:]

    responses: dict[str, httpx.Response] = {}
    async with client_for(app) as client:

        async def send(name: str, content: Any) -> None:
            responses[name] = await client.post(UPSERT_URL, content=content, headers=json_headers())

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(send, "trickler", trickle())
            tasks.start_soon(send, "other", json.dumps(example(account_id=OTHER_ACCOUNT)))
    assert responses["trickler"].status_code == 408
    assert responses["trickler"].json() == TIMEOUT_BODY
    assert upserted(responses["other"])
    assert store.calls == [OTHER_ACCOUNT]
    assert store.store_get(ACCOUNT) is None
    metrics = app.state.metrics.snapshot()
    assert (metrics["applied"], metrics["rejected"], metrics["failed"]) == (1, {"408": 1}, 0)


@pytest.mark.parametrize("seconds", [0, -1.0, math.nan])
def test_a_body_timeout_that_is_not_a_positive_number_is_refused(seconds: float) -> None:
    with pytest.raises(ConfigurationError, match="body_timeout"):
        make_app(MemoryStore(), body_timeout=seconds)


def test_serve_with_a_negative_body_timeout_exits_2(tmp_path: Path) -> None:
    args = ["serve", "--store", "memory://", "--port", str(free_port()), "--api-key", "k"]
    result = run_cli(*args, "--body-timeout", "-1", cwd=tmp_path)
    assert_refused(result, 2, "--body-timeout")
