"""``serve``'s connection bounds and retry deadline option.

uvicorn has no timeout for request headers; ``--limit-concurrency`` is the bound ``serve``
enables instead: clients that never finish their headers count towards it, and past it new
requests get a quick 503 rather than the process running out of file descriptors.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rsm_support import TOKEN, UPSERT_URL, example, json_headers, run_cli, serving


@contextlib.contextmanager
def stalled_connections(base_url: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections that sent half a request line and nothing more."""
    host, port = base_url.removeprefix("http://").split(":")
    sockets = []
    try:
        for _ in range(count):
            stalled = socket.create_connection((host, int(port)), timeout=5)
            stalled.sendall(b"POST /runtime-snapshots/upsert HTTP/1.1\r\nHost: x\r\n")
            sockets.append(stalled)
        time.sleep(0.3)  # let the server accept them all
        yield sockets
    finally:
        for stalled in sockets:
            stalled.close()


def post(base_url: str) -> httpx.Response:
    body = example(account_id="acct-limits", strategy_version=1, snapshot_id="v1")
    return httpx.post(base_url + UPSERT_URL, json=body, headers=json_headers(), timeout=10)


def test_stalled_header_connections_past_the_limit_get_new_requests_a_quick_503(
    tmp_path: Path,
) -> None:
    options = ["--store", "memory://", "--api-key", TOKEN, "--limit-concurrency", "4"]
    with serving(*options, directory=tmp_path) as url:
        assert post(url).status_code == 200
        with stalled_connections(url, 4):
            started = time.monotonic()
            response = post(url)
            assert response.status_code == 503
            assert time.monotonic() - started < 5
        deadline = time.monotonic() + 10
        while (status := post(url).status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # the server notices the closed connections
        assert status == 200


def test_an_idle_keep_alive_connection_is_closed_after_timeout_keep_alive(
    tmp_path: Path,
) -> None:
    options = ["--store", "memory://", "--api-key", TOKEN, "--timeout-keep-alive", "1"]
    with serving(*options, directory=tmp_path) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = connection.recv(65536)
            assert answer.startswith(b"HTTP/1.1 ")
            started = time.monotonic()
            while connection.recv(65536):  # b"": the server closed the connection
                pass
            assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (["--retry-deadline", "0"], "--retry-deadline must be a positive number"),
        (["--retry-deadline", "nan"], "--retry-deadline must be a positive number"),
        (["--retry-deadline", "1", "--store", "memory://"], "SQLAlchemy store URLs only"),
        (["--limit-concurrency", "0"], "--limit-concurrency must be at least 1"),
        (["--timeout-keep-alive", "0"], "--timeout-keep-alive must be at least 1"),
    ],
)
def test_serve_refuses_a_bad_bound_with_exit_2(
    options: list[str], reason: str, tmp_path: Path
) -> None:
    result = run_cli("serve", "--api-key", TOKEN, *options, cwd=tmp_path)
    assert result.returncode == 2
    assert reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
