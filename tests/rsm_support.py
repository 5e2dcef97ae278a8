"""Shared values and helpers of the core's tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp

from runtime_snapshot_mount import MemoryStore, Snapshot, create_app

UPSERT_URL = "/runtime-snapshots/upsert"
TOKEN = "test-token-current"
ROTATED_TOKEN = "test-token-previous"
ACCOUNT = "account_user095916355"
INACTIVE_ACCOUNT = "account_retired"
OTHER_ACCOUNT = "account_other"
ACCOUNTS: list[Any] = [
    ACCOUNT,
    OTHER_ACCOUNT,
    {"account_id": INACTIVE_ACCOUNT, "active": False},
]

# The API page's example request and its two example responses, verbatim.
EXAMPLE_REQUEST: dict[str, Any] = {
    "account_id": "account_user095916355",
    "ugc_account_id": "ugc_123",
    "snapshot_id": "snapshot-2026-03-22-001",
    "strategy_version": 7,
    "content_hash": "sha256:abc123",
    "strategy_synced_at": "2026-03-22T08:30:00.000Z",
    "stage": "warmup",
    "active_action": "keyword_warmup",
    "active_skills": ["warmup", "commenting"],
    "personality": {
        "comment_style": "casual, validating",
        "interests": ["healthy recipes", "meal prep"],
    },
}
EXAMPLE_APPLIED: dict[str, Any] = {
    "status": "upserted",
    "account_id": "account_user095916355",
    "snapshot_id": "snapshot-2026-03-22-001",
    "strategy_version": 7,
    "strategy_synced_at": "2026-03-22T08:30:00.000Z",
}
EXAMPLE_IGNORED: dict[str, Any] = {
    "status": "ignored_stale",
    "account_id": "account_user095916355",
    "snapshot_id": "snapshot-2026-03-22-001",
    "strategy_version": 6,
}
APPLIED_KEYS = ["status", "account_id", "snapshot_id", "strategy_version", "strategy_synced_at"]
IGNORED_KEYS = ["status", "account_id", "snapshot_id", "strategy_version"]

UNAUTHORIZED_BODY = b'{"detail":"Missing or invalid bearer token"}'
NOT_FOUND_BODY = b'{"detail":"Account not found or inactive"}'
FAILURE_BODY = b'{"detail":"Unexpected update failure"}'

MISSING = object()
"""A value for :func:`example` that removes the field."""


def example(**changes: Any) -> dict[str, Any]:
    """A deep copy of the example request with ``changes`` applied (``MISSING`` removes)."""
    body = copy.deepcopy(EXAMPLE_REQUEST)
    for name, value in changes.items():
        if value is MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def compact(value: Any) -> bytes:
    """``value`` as the compact JSON bytes a Starlette ``JSONResponse`` sends."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def json_headers(token: str | None = TOKEN) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers.update(bearer(token))
    return headers


def make_app(
    store: object,
    *plugins: object,
    api_keys: Any = (TOKEN, ROTATED_TOKEN),
    accounts: Any = ACCOUNTS,
    **options: Any,
) -> Starlette:
    """The core app on ``store`` with the test tokens and accounts, without entry points."""
    return create_app(
        store, *plugins, api_keys=api_keys, accounts=accounts, entry_points=False, **options
    )


def client_for(app: ASGIApp, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """An httpx client that calls ``app`` in-process (the app's lifespan never runs)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def post_json(
    client: httpx.AsyncClient,
    body: Any,
    *,
    token: str | None = TOKEN,
    url: str = UPSERT_URL,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST ``body`` (a JSON value, or raw bytes/str sent as is) as application/json."""
    content = body if isinstance(body, bytes | str) else json.dumps(body)
    merged = json_headers(token)
    merged.update(headers or {})
    return await client.post(url, content=content, headers=merged)


class RecordingBody:
    """An async request body that counts the chunks the app pulled from it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks
        self.pulled = 0

    def __aiter__(self) -> RecordingBody:
        return self

    async def __anext__(self) -> bytes:
        if self.pulled >= len(self._chunks):
            raise StopAsyncIteration
        chunk = self._chunks[self.pulled]
        self.pulled += 1
        return chunk

    @property
    def total(self) -> int:
        return len(self._chunks)


def nested_personality(levels: int, *, arrays: bool = True) -> dict[str, Any]:
    """A personality object exactly ``levels`` levels deep (the object itself is level 1).

    Inner containers alternate between arrays and objects, or are all objects.
    """
    value: Any = "leaf"
    for level in range(levels - 1):
        value = [value] if arrays and level % 2 == 0 else {"k": value}
    return {"deep": value}


def depth(value: Any) -> int:
    """How many levels of nested objects/arrays ``value`` has (0 for a scalar)."""
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    return 0


def stored_in(store: MemoryStore, account_id: str = ACCOUNT) -> Snapshot | None:
    """What the memory store holds for ``account_id`` now."""
    return store.store_get(account_id)


# -- the command line as a process -------------------------------------------------

COMMAND = [sys.executable, "-m", "runtime_snapshot_mount"]
STARTUP_LIMIT_S = 15.0
REFUSAL_LIMIT_S = 60.0


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without PHONEFARM_API_KEY, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PHONEFARM_API_KEY"}
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command to completion; it must not start serving (the timeout is a safety net)."""
    return subprocess.run(
        [*COMMAND, *args],
        cwd=cwd,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=REFUSAL_LIMIT_S,
        check=False,
    )


def wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Poll the port until it accepts a connection; a bounded loop, not a timed assertion."""
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"server did not listen on port {port}: {log.read_text()}")


def wait_for_line(log: Path, text: str) -> None:
    """Poll ``log`` until ``text`` is in it; a bounded loop, not a timed assertion."""
    deadline = time.monotonic() + STARTUP_LIMIT_S
    while time.monotonic() < deadline:
        if text in log.read_text(encoding="utf-8", errors="replace"):
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} never appeared in the log:\n{log.read_text()}")


def sigterm_mid_request(
    process: subprocess.Popen[bytes], port: int, log: Path, token: str = "k"
) -> tuple[int, bytes]:
    """Once the server has started, send an upsert's headers and the first bytes of its body,
    SIGTERM the server, wait until it is shutting down, then send the rest. Returns the
    server's exit status and the raw response."""
    wait_until_listening(process, port, log)
    wait_for_line(log, "Application startup complete")
    body = json.dumps(EXAMPLE_REQUEST).encode()
    head = (
        f"POST {UPSERT_URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head + body[:10])
        time.sleep(0.5)  # let the server read the headers: the request is in flight
        process.send_signal(signal.SIGTERM)
        wait_for_line(log, "Shutting down")
        connection.sendall(body[10:])
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    return process.wait(timeout=30), response


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server (SIGTERM, so it shuts down cleanly); kill it if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def assert_refused(result: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    """The command exited with ``status`` and one stderr line naming each of ``words``."""
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]


@contextlib.contextmanager
def serving(*args: str, directory: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``runtime-snapshot-mount serve ARGS`` on a free loopback port until the block ends;
    yields its base URL. The server's output goes to ``directory / "server.log"``."""
    port = free_port()
    log = directory / "server.log"
    command = [*COMMAND, "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=directory,
            env=clean_env() if env is None else env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_listening(process, port, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def install_entry_point(site: Path, module: str, source: str, name: str = "plugin") -> None:
    """Write ``module`` (``source``) into ``site`` as an installed distribution whose entry
    point in the ``runtime_snapshot_mount`` group loads ``module:plugin``."""
    (site / f"{module}.py").write_text(source, encoding="utf-8")
    dist_info = site / f"{module}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n",
        encoding="utf-8",
    )
    (dist_info / "entry_points.txt").write_text(
        f"[runtime_snapshot_mount]\n{name} = {module}:plugin\n", encoding="utf-8"
    )


LOGGER_NAMES = (
    "runtime_snapshot_mount",
    "runtime_snapshot_mount.access",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)


@contextlib.contextmanager
def logging_restored(names: Iterable[str] = LOGGER_NAMES) -> Iterator[None]:
    """After the block, the loggers ``names`` as they were before it (handlers, level,
    propagation, disabled); the handlers the block gave them are flushed and closed. For tests
    that set up the standalone server's logging in this process (``serve`` with ``uvicorn.run``
    replaced, or the logging set-up itself), so that no later test meets that set-up."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers]
    try:
        yield
    finally:
        for logger, (handlers, level, propagate, disabled) in zip(loggers, saved, strict=True):
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()  # writes what it holds first
            logger.handlers, logger.propagate, logger.disabled = handlers, propagate, disabled
            logger.setLevel(level)
