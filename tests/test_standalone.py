"""The ASGI factory for process managers: its settings, and the store lifecycle under
``serve``, ``uvicorn --factory`` and gunicorn, run as real processes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from rsm_support import (
    COMMAND,
    EXAMPLE_APPLIED,
    EXAMPLE_IGNORED,
    EXAMPLE_REQUEST,
    FAILURE_BODY,
    UPSERT_URL,
    clean_env,
    compact,
    example,
    free_port,
    sigterm_mid_request,
    stop,
    wait_for_line,
    wait_until_listening,
)
from standalone_support import (
    STORE_URL,
    by_store,
    events,
    loopbound_env,
    python_module,
    start,
)

from runtime_snapshot_mount import ConfigurationError
from runtime_snapshot_mount.server.standalone import (
    DEFAULT_STORE,
    ENVIRONMENT,
    Settings,
    StandaloneApp,
    create_app_from_env,
    is_process_local,
)

FACTORY = "runtime_snapshot_mount.standalone:create_app_from_env"
AUTH = {"Authorization": "Bearer k"}

# -- settings from the environment ------------------------------------------------------


def test_settings_take_comma_separated_keys_and_phonefarm_api_key() -> None:
    settings = Settings.from_environ({"RSM_API_KEYS": " a , b,,", "PHONEFARM_API_KEY": "c"})
    assert settings.api_keys == ("a", "b", "c")
    assert settings.store == DEFAULT_STORE
    assert settings.accounts is None
    assert settings.create_tables is True
    assert settings.access_log is True
    assert (settings.log_level, settings.log_format) == ("info", "text")


def test_phonefarm_api_key_alone_is_enough() -> None:
    assert Settings.from_environ({"PHONEFARM_API_KEY": "only"}).api_keys == ("only",)


@pytest.mark.parametrize("environ", [{}, {"RSM_API_KEYS": " , "}, {"PHONEFARM_API_KEY": " "}])
def test_settings_without_a_key_are_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError, match="no API key"):
        Settings.from_environ(environ)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RSM_MAX_BODY_BYTES", "1.5"),
        ("RSM_MAX_BODY_BYTES", "0"),
        ("RSM_BODY_TIMEOUT", "-1"),
        ("RSM_BODY_TIMEOUT", "later"),
        ("RSM_OPENAPI", "2"),
        ("RSM_CREATE_TABLES", "perhaps"),
        ("RSM_ACCESS_LOG", "loud"),
    ],
)
def test_a_bad_variable_is_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Settings.from_environ({"RSM_API_KEYS": "k", variable: value})


def test_settings_round_trip_through_the_environment() -> None:
    settings = Settings(
        api_keys=("a", "b"),
        store="sqlite:///x.db",
        accounts="/srv/accounts.json",
        max_body_bytes=2048,
        body_timeout=None,
        openapi=True,
        read=True,
        create_tables=False,
        access_log=False,
        log_level="warning",
        log_format="json",
    )
    assert Settings.from_environ(settings.to_environ()) == settings
    assert set(settings.to_environ()) <= set(ENVIRONMENT)


def test_a_zero_body_timeout_means_no_limit() -> None:
    settings = Settings.from_environ({"RSM_API_KEYS": "k", "RSM_BODY_TIMEOUT": "0"})
    assert settings.body_timeout is None


def test_the_factory_refuses_a_missing_accounts_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigurationError, match="accounts"):
        create_app_from_env({"RSM_API_KEYS": "k", "RSM_ACCOUNTS": str(missing)})


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("memory://", True),
        ("sqlite://", True),
        ("sqlite:///:memory:", True),
        ("sqlite+aiosqlite://", True),
        ("sqlite:///file:shared?mode=memory&cache=shared&uri=true", True),
        ("sqlite:///runtime-snapshots.db", False),
        ("sqlite:////var/lib/rsm/snapshots.db", False),
        ("postgresql+asyncpg://postgres@127.0.0.1/test", False),
        ("loopbound://", False),
    ],
)
def test_is_process_local(url: str, local: bool) -> None:
    assert is_process_local(url) is local


# -- the store lifecycle under serve ----------------------------------------------------


def serve_command(port: int, *options: str) -> list[str]:
    return [
        *COMMAND,
        "serve",
        "--store",
        STORE_URL,
        "--port",
        str(port),
        "--api-key",
        "k",
        *options,
    ]


def upsert_versions_then_sigterm(
    process: subprocess.Popen[bytes], port: int, log: Path, count: int
) -> None:
    """Upsert the example with versions 1 to ``count`` (each applied), then SIGTERM the server,
    which must exit 0."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        for version in range(1, count + 1):
            body = example(strategy_version=version)
            assert client.post(UPSERT_URL, json=body, headers=AUTH).status_code == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0, log.read_text()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_creates_the_table_once_in_the_parent_and_each_worker_opens_and_closes_its_own(
    tmp_path: Path, workers: int
) -> None:
    port = free_port()
    command = serve_command(port, "--workers", str(workers))
    process, log = start(command, tmp_path, loopbound_env(tmp_path))
    try:
        wait_until_listening(process, port, log)
        for _ in range(workers):  # every worker reports its start-up
            wait_for_line(log, "Application startup complete")
        upsert_versions_then_sigterm(process, port, log, 8)
    finally:
        stop(process)
    calls = by_store(events(tmp_path))
    parent = [(key, got) for key, got in calls.items() if key[0] == process.pid]
    creating = [key for key, got in calls.items() if "create" in got]
    assert len(creating) == 1, calls
    assert calls[creating[0]] == ["open", "create", "close"], calls
    assert creating[0][0] == process.pid  # in the parent, before any worker
    serving = {key: got for key, got in calls.items() if key != creating[0]}
    assert len(serving) == workers, calls
    for got in serving.values():
        assert got[0] == "open" and got[-1] == "close", got
        assert set(got[1:-1]) <= {"upsert"}, got
    assert sum(got.count("upsert") for got in serving.values()) == 8
    if workers > 1:
        assert all(key[0] != process.pid for key in serving), calls
    else:
        assert len(parent) == 2
    first_serving_open = min(
        index
        for index, event in enumerate(events(tmp_path))
        if (event["pid"], event["store"]) in serving
    )
    closed_creator = max(
        index
        for index, event in enumerate(events(tmp_path))
        if (event["pid"], event["store"]) == creating[0]
    )
    assert closed_creator < first_serving_open


@pytest.mark.parametrize("options", [(), ("--workers", "2")], ids=["one-process", "two-workers"])
def test_sigterm_drains_the_request_in_flight_and_exits_0(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    port = free_port()
    process, log = start(serve_command(port, *options), tmp_path, loopbound_env(tmp_path))
    try:
        status, response = sigterm_mid_request(process, port, log)
    finally:
        stop(process)
    assert status == 0, log.read_text()
    head, _, answer = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response
    assert json.loads(answer) == EXAMPLE_APPLIED
    assert "Traceback" not in log.read_text()
    assert all(got[-1] == "close" for got in by_store(events(tmp_path)).values())


# -- without a lifespan (daphne) ------------------------------------------------------


@pytest.mark.anyio
async def test_without_a_lifespan_the_first_requests_start_the_app_once() -> None:
    """httpx's ASGI transport runs no lifespan, as daphne does: ten concurrent first requests
    start one store, and every one of them is answered by it."""
    app = StandaloneApp(Settings(api_keys=("k",), store="memory://", read=True))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answers = await asyncio.gather(
            *(
                client.post(UPSERT_URL, json=example(strategy_version=version), headers=AUTH)
                for version in range(1, 11)
            )
        )
        assert [answer.status_code for answer in answers] == [200] * 10
        plugins = app.plugins
        stored = await client.get(
            f"/runtime-snapshots/{EXAMPLE_REQUEST['account_id']}", headers=AUTH
        )
    assert stored.status_code == 200 and stored.json()["strategy_version"] == 10
    assert app.plugins is plugins is not None


@pytest.mark.anyio
async def test_without_a_lifespan_a_failed_start_answers_500_and_the_next_request_tries_again() -> (
    None
):
    app = StandaloneApp(Settings(api_keys=("k",), store="nosuch://x"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        failed = await client.post(UPSERT_URL, json=EXAMPLE_REQUEST, headers=AUTH)
        assert failed.status_code == 500
        assert failed.content == FAILURE_BODY and failed.headers["x-request-id"]
        app.settings = Settings(api_keys=("k",), store="memory://")  # the store is back
        applied = await client.post(UPSERT_URL, json=EXAMPLE_REQUEST, headers=AUTH)
    assert applied.content == compact(EXAMPLE_APPLIED)


# -- the factory under uvicorn and gunicorn ---------------------------------------------


def post_the_example_twice(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        applied = client.post(UPSERT_URL, json=EXAMPLE_REQUEST, headers=AUTH)
        assert applied.status_code == 200, applied.text
        assert applied.content == compact(EXAMPLE_APPLIED)
        ignored = client.post(UPSERT_URL, json=example(strategy_version=6), headers=AUTH)
        assert ignored.content == compact(EXAMPLE_IGNORED)
        assert client.post(UPSERT_URL, json=EXAMPLE_REQUEST).status_code == 401


def test_the_factory_under_uvicorn_answers_the_api_example(tmp_path: Path) -> None:
    port = free_port()
    command = python_module("uvicorn", "--factory", FACTORY, "--port", str(port))
    env = clean_env(RSM_STORE="memory://", RSM_API_KEYS="other,k")
    process, log = start(command, tmp_path, env)
    try:
        wait_until_listening(process, port, log)
        post_the_example_twice(f"http://127.0.0.1:{port}")
    finally:
        stop(process)


def test_the_factory_under_uvicorn_opens_creates_and_closes_on_the_servers_loop(
    tmp_path: Path,
) -> None:
    port = free_port()
    command = python_module("uvicorn", "--factory", FACTORY, "--port", str(port))
    process, log = start(
        command, tmp_path, loopbound_env(tmp_path, RSM_STORE=STORE_URL, RSM_API_KEYS="k")
    )
    try:
        wait_until_listening(process, port, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.post(UPSERT_URL, json=EXAMPLE_REQUEST, headers=AUTH).status_code == 200
    finally:
        stop(process)
    assert list(by_store(events(tmp_path)).values()) == [["open", "create", "upsert", "close"]]


def test_the_factory_without_a_key_fails_to_start(tmp_path: Path) -> None:
    command = python_module("uvicorn", "--factory", FACTORY, "--port", str(free_port()))
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=clean_env(RSM_STORE="memory://"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "no API key" in result.stderr


gunicorn_missing = pytest.mark.skipif(
    importlib.util.find_spec("gunicorn") is None, reason="gunicorn is not installed"
)


@gunicorn_missing
def test_the_factory_under_gunicorn_with_two_workers(tmp_path: Path) -> None:
    port = free_port()
    command = python_module(
        "gunicorn",
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "20",
        f"{FACTORY}()",
    )
    env = loopbound_env(tmp_path, RSM_STORE=STORE_URL, RSM_API_KEYS="k")
    process, log = start(command, tmp_path, env)
    try:
        wait_until_listening(process, port, log)
        deadline = time.monotonic() + 15
        while len(by_store(events(tmp_path))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # both workers opened their stores
        upsert_versions_then_sigterm(process, port, log, 6)
    finally:
        stop(process)
    calls = by_store(events(tmp_path))
    assert len(calls) == 2, calls
    assert len({pid for pid, _ in calls}) == 2
    for got in calls.values():
        assert got[:2] == ["open", "create"] and got[-1] == "close", got
        assert set(got[2:-1]) <= {"upsert"}, got
    assert sum(got.count("upsert") for got in calls.values()) == 6


# -- read-back --------------------------------------------------------------------------


@pytest.mark.parametrize("switch", ["--read", "RSM_READ=true"])
def test_serve_read_serves_the_stored_snapshot(tmp_path: Path, switch: str) -> None:
    port = free_port()
    command = [*COMMAND, "serve", "--store", "memory://", "--port", str(port), "--api-key", "k"]
    env = clean_env()
    if switch.startswith("--"):
        command.append(switch)
    else:
        name, _, value = switch.partition("=")
        env[name] = value
    process, log = start(command, tmp_path, env)
    account_url = f"/runtime-snapshots/{EXAMPLE_REQUEST['account_id']}"
    try:
        wait_until_listening(process, port, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get(account_url, headers=AUTH).status_code == 404
            assert client.post(UPSERT_URL, json=EXAMPLE_REQUEST, headers=AUTH).status_code == 200
            assert client.get(account_url).status_code == 401
            shown = client.get(account_url, headers=AUTH)
    finally:
        stop(process)
    assert shown.status_code == 200, shown.text
    assert shown.json()["snapshot_id"] == EXAMPLE_REQUEST["snapshot_id"]
    assert shown.json()["personality"] == EXAMPLE_REQUEST["personality"]


def test_serve_without_read_serves_no_read_back(tmp_path: Path) -> None:
    port = free_port()
    command = [*COMMAND, "serve", "--store", "memory://", "--port", str(port), "--api-key", "k"]
    process, log = start(command, tmp_path, clean_env())
    try:
        wait_until_listening(process, port, log)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.post(UPSERT_URL, json=EXAMPLE_REQUEST, headers=AUTH).status_code == 200
            url = f"/runtime-snapshots/{EXAMPLE_REQUEST['account_id']}"
            assert client.get(url, headers=AUTH).status_code == 404
    finally:
        stop(process)
