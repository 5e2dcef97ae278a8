"""The command line (SPEC §5): the real server process over 127.0.0.1, and its refusals."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from rsm_support import (
    ACCOUNT,
    COMMAND,
    EXAMPLE_APPLIED,
    EXAMPLE_IGNORED,
    EXAMPLE_REQUEST,
    INACTIVE_ACCOUNT,
    NOT_FOUND_BODY,
    UNAUTHORIZED_BODY,
    UPSERT_URL,
    assert_refused,
    clean_env,
    compact,
    example,
    free_port,
    install_entry_point,
    run_cli,
    stop,
    wait_until_listening,
)

from runtime_snapshot_mount import parse_instant

SERVER_LIMIT_BYTES = 2048
KEYS = ["cli-key-current", "cli-key-previous"]
ENV_KEY = "cli-key-from-environment"
# each test that writes uses its own account, so the tests sharing one server stay independent
ROTATION_ACCOUNT = "account_rotation"
LIMITS_ACCOUNT = "account_limits"


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One real ``serve`` process: two --api-key, PHONEFARM_API_KEY, --accounts, a small limit."""
    directory = tmp_path_factory.mktemp("serve")
    accounts = directory / "accounts.json"
    listed = [ACCOUNT, ROTATION_ACCOUNT, LIMITS_ACCOUNT]
    entries = [{"account_id": account_id, "active": True} for account_id in listed]
    entries.append({"account_id": INACTIVE_ACCOUNT, "active": False})
    accounts.write_text(json.dumps(entries), encoding="utf-8")
    port = free_port()
    log = directory / "server.log"
    args = ["serve", "--store", "memory://", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--accounts", str(accounts), "--max-body-bytes", str(SERVER_LIMIT_BYTES)]
    for key in KEYS:
        args += ["--api-key", key]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*COMMAND, *args],
            cwd=directory,
            env=clean_env(PHONEFARM_API_KEY=ENV_KEY),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_listening(process, port, log)
        yield Server(f"http://127.0.0.1:{port}", process, log)
    finally:
        stop(process)


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def post(http: httpx.Client, body: object, token: str | None = KEYS[0]) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(UPSERT_URL, content=content, headers=headers)


# -- the served endpoint ----------------------------------------------------------------


def test_served_example_request_yields_the_example_responses(http: httpx.Client) -> None:
    applied = post(http, EXAMPLE_REQUEST)
    assert applied.status_code == 200
    assert applied.content == compact(EXAMPLE_APPLIED)
    ignored = post(http, example(strategy_version=6))
    assert ignored.status_code == 200
    assert ignored.content == compact(EXAMPLE_IGNORED)


@pytest.mark.parametrize("token", [*KEYS, ENV_KEY])
def test_server_accepts_every_api_key_flag_and_the_environment_key(
    http: httpx.Client, token: str
) -> None:
    response = post(http, example(account_id=ROTATION_ACCOUNT), token=token)
    assert response.status_code == 200
    assert response.json() == {**EXAMPLE_APPLIED, "account_id": ROTATION_ACCOUNT}


@pytest.mark.parametrize("token", [None, "not-a-key", KEYS[0].upper()])
def test_server_refuses_unknown_tokens(http: httpx.Client, token: str | None) -> None:
    response = post(http, EXAMPLE_REQUEST, token=token)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.content == UNAUTHORIZED_BODY


@pytest.mark.parametrize("account_id", [INACTIVE_ACCOUNT, "account_not_in_the_file"])
def test_server_answers_404_for_inactive_and_unlisted_accounts(
    http: httpx.Client, account_id: str
) -> None:
    response = post(http, example(account_id=account_id))
    assert response.status_code == 404
    assert response.content == NOT_FOUND_BODY


def test_server_enforces_max_body_bytes(http: httpx.Client) -> None:
    raw = json.dumps(example(account_id=LIMITS_ACCOUNT)).encode()
    assert post(http, raw + b" " * (SERVER_LIMIT_BYTES - len(raw))).status_code == 200
    too_big = post(http, raw + b" " * (SERVER_LIMIT_BYTES + 1 - len(raw)))
    assert too_big.status_code == 413
    assert isinstance(too_big.json()["detail"], str)


def test_server_streams_chunked_bodies_against_the_limit(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps(example(account_id=LIMITS_ACCOUNT)).encode()
        for _ in range(100):
            yield b" " * 100

    response = http.post(
        UPSERT_URL,
        content=chunks(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEYS[0]}"},
    )
    assert response.status_code == 413


def test_server_validates_the_body(http: httpx.Client) -> None:
    response = post(http, example(strategy_synced_at="2026-03-22T08:30:00"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "strategy_synced_at"]


def test_server_answers_405_for_get(http: httpx.Client) -> None:
    response = http.get(UPSERT_URL)
    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}


# -- refusals ---------------------------------------------------------------------------


def serve_args(*extra: str) -> list[str]:
    return ["serve", "--store", "memory://", "--port", str(free_port()), *extra]


def test_serve_without_any_api_key_exits_2(tmp_path: Path) -> None:
    assert_refused(run_cli(*serve_args(), cwd=tmp_path), 2, "key")


def test_serve_with_an_empty_environment_key_and_no_flag_exits_2(tmp_path: Path) -> None:
    result = run_cli(*serve_args(), cwd=tmp_path, env=clean_env(PHONEFARM_API_KEY=""))
    assert_refused(result, 2, "key")


def test_serve_with_a_missing_accounts_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-accounts.json"
    result = run_cli(*serve_args("--api-key", "k", "--accounts", str(missing)), cwd=tmp_path)
    assert_refused(result, 2, "accounts", str(missing))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("this is not json", id="not-json"),
        pytest.param("", id="empty-file"),
        pytest.param(json.dumps({"account_id": ACCOUNT, "active": True}), id="not-an-array"),
        pytest.param(json.dumps([ACCOUNT]), id="string-item"),
        pytest.param(json.dumps([{"active": True}]), id="item-without-account-id"),
        pytest.param(json.dumps([{"account_id": 5}]), id="numeric-account-id"),
        pytest.param(json.dumps([{"account_id": ""}]), id="empty-account-id"),
        pytest.param(json.dumps([{"account_id": ACCOUNT, "active": "yes"}]), id="active-string"),
        pytest.param(json.dumps([{"account_id": "a\nb", "active": 1}]), id="active-number"),
    ],
)
def test_serve_with_a_malformed_accounts_file_exits_2(tmp_path: Path, content: str) -> None:
    accounts = tmp_path / "accounts.json"
    accounts.write_text(content, encoding="utf-8")
    result = run_cli(*serve_args("--api-key", "k", "--accounts", str(accounts)), cwd=tmp_path)
    assert_refused(result, 2, "accounts")


def test_serve_with_several_workers_on_memory_store_exits_2(tmp_path: Path) -> None:
    result = run_cli(*serve_args("--api-key", "k", "--workers", "2"), cwd=tmp_path)
    assert_refused(result, 2, "memory://")


def test_serve_with_a_zero_body_limit_exits_2(tmp_path: Path) -> None:
    result = run_cli(*serve_args("--api-key", "k", "--max-body-bytes", "0"), cwd=tmp_path)
    assert_refused(result, 2, "max-body-bytes")


@pytest.mark.skipif(
    importlib.util.find_spec("runtime_snapshot_mount_sqlalchemy") is not None,
    reason="the SQLAlchemy plugin is installed, so the default sqlite store opens",
)
def test_serve_on_the_default_sqlite_store_without_the_sqlalchemy_plugin_exits_2(
    tmp_path: Path,
) -> None:
    result = run_cli("serve", "--api-key", "k", "--port", str(free_port()), cwd=tmp_path)
    assert_refused(result, 2, "sqlalchemy")
    assert list(tmp_path.iterdir()) == []


def test_show_on_the_memory_store_exits_1_with_a_reason(tmp_path: Path) -> None:
    result = run_cli("show", ACCOUNT, "--store", "memory://", cwd=tmp_path)
    assert_refused(result, 1, ACCOUNT)
    assert result.stdout == ""


# -- show -------------------------------------------------------------------------------

PREFILLED_SYNCED_AT = "2026-03-22T10:30:00.1234567+02:00"


@pytest.fixture
def prefilled_store_plugin(tmp_path: Path) -> dict[str, str]:
    """An installed plugin (entry point on PYTHONPATH) opening ``prefilled://``: a memory
    store that already holds the example snapshot. Returns the environment to run with."""
    site = tmp_path / "site"
    site.mkdir()
    install_entry_point(
        site,
        "rsm_prefilled_store",
        textwrap.dedent(
            f"""
            from runtime_snapshot_mount import MemoryStore, hookimpl
            from runtime_snapshot_mount.testing import make_snapshot


            class Opener:
                @hookimpl
                def store_from_url(self, url):
                    if url != "prefilled://":
                        return None
                    store = MemoryStore()
                    store.store_upsert(
                        make_snapshot(
                            {ACCOUNT!r}, 7, {PREFILLED_SYNCED_AT!r},
                            snapshot_id={EXAMPLE_REQUEST["snapshot_id"]!r},
                        )
                    )
                    return store


            plugin = Opener()
            """
        ),
        name="prefilled",
    )
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return clean_env(PYTHONPATH=path)


def test_show_prints_the_stored_snapshot_as_one_json_object(
    tmp_path: Path, prefilled_store_plugin: dict[str, str]
) -> None:
    result = run_cli(
        "show", ACCOUNT, "--store", "prefilled://", cwd=tmp_path, env=prefilled_store_plugin
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    shown = json.loads(lines[0])
    assert isinstance(shown, dict)
    synced_at = shown.pop("strategy_synced_at")
    expected = dict(EXAMPLE_REQUEST)
    del expected["strategy_synced_at"]
    assert shown == expected
    assert parse_instant(synced_at) == parse_instant(PREFILLED_SYNCED_AT)


def test_show_of_an_account_without_a_snapshot_exits_1(
    tmp_path: Path, prefilled_store_plugin: dict[str, str]
) -> None:
    result = run_cli(
        "show",
        "account_never_written",
        "--store",
        "prefilled://",
        cwd=tmp_path,
        env=prefilled_store_plugin,
    )
    assert_refused(result, 1, "account_never_written")
    assert result.stdout == ""
